"""The quickstart: the whole story under one budget (tokenizer, BERT and ELMo pretraining, the
SST-2 comparison, report.html), built from the recipes."""

from muppets.quickstart.run import QuickstartConfig, run_quickstart

__all__ = ["QuickstartConfig", "run_quickstart"]
