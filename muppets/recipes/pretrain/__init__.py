"""`muppets pretrain`: tokenizer + shards + model + objective (+ phases) -> train().

config.py   PretrainConfig: the options of a run, and the per-phase configs it expands into
phases.py   Phase (one [[phases]] table), the share/max_steps rules, the run's merged metrics
run.py      pretrain(): one run, or its phases one after the other (weights carried over)
"""

from muppets.recipes.pretrain.config import PretrainConfig
from muppets.recipes.pretrain.phases import Phase
from muppets.recipes.pretrain.run import held_out_batches, pretrain

__all__ = ["Phase", "PretrainConfig", "held_out_batches", "pretrain"]
