"""`muppets finetune`: a task + a pretrained encoder (fine-tuned, or frozen under a downstream
model) -> train() -> scores. One recipe in two files: run.py (the command, the encoder path) and
features.py (the frozen-feature path, `--downstream`)."""

from muppets.recipes.finetune.run import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "finetune"]
