"""`muppets quickstart`: the whole pipeline on the bundled sample, stage by stage.

Each stage writes into its own folder under `out` and is skipped when its output is already
complete, so an interrupted quickstart resumes from the finished stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from muppets.data.prepare import (
    PrepareConfig,
    TokenizerTrainConfig,
    prepare_corpus,
    train_tokenizer,
)
from muppets.errors import ConfigError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@dataclass
class QuickstartConfig:
    out: str = field(default="runs/quickstart", metadata={"help": "output directory"})
    vocab_size: int = field(default=8000, metadata={"help": "WordPiece vocabulary size"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase the text"})

    def __post_init__(self):
        if self.vocab_size < 100:
            raise ConfigError(f"vocab_size must be >= 100, got {self.vocab_size}")


def run_quickstart(config: QuickstartConfig) -> dict:
    out = Path(config.out)
    train_text = str(SAMPLES / "wiki.train.txt")
    valid_text = str(SAMPLES / "wiki.valid.txt")

    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        print(f"[1/2] training a {config.vocab_size}-token WordPiece tokenizer on {train_text}")
        train_tokenizer(
            TokenizerTrainConfig(
                inputs=[train_text],
                out=str(tokenizer_dir),
                vocab_size=config.vocab_size,
                lowercase=config.lowercase,
            )
        )
    else:
        print(f"[1/2] tokenizer already in {tokenizer_dir}")

    manifests = {}
    for split, text in (("train", train_text), ("valid", valid_text)):
        shard_dir = out / "shards" / split
        if not (shard_dir / "manifest.json").exists():
            print(f"[2/2] preparing {split} shards from {text}")
            prepare_corpus(
                PrepareConfig(inputs=[text], tokenizer=str(tokenizer_dir), out=str(shard_dir))
            )
        manifests[split] = json.loads((shard_dir / "manifest.json").read_text())

    print("\nquickstart outputs")
    print(f"  tokenizer   {tokenizer_dir}")
    for split, manifest in manifests.items():
        counts = manifest
        print(
            f"  {split:<5} shards {out / 'shards' / split}: {counts['documents']:,} documents, "
            f"{counts['sentences']:,} sentences, {counts['tokens']:,} tokens"
        )
    return manifests
