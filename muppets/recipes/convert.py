"""`muppets convert`: checkpoints both ways between muppets and Hugging Face transformers.

A Hugging Face directory is told apart by the "architectures" key that transformers writes in
config.json; the tokenizer files travel along. ELECTRA's two towers are two transformers models:
the discriminator (ElectraForPreTraining) in the output directory, the generator
(ElectraForMaskedLM) in its generator/ sub-directory (models/hf_electra.py).

Every shape converts: pretraining heads or not (BertForPreTraining, BertForMaskedLM, BertModel),
and fine-tuned models both ways: our task.json <-> transformers' ...ForSequenceClassification /
...ForTokenClassification / ...ForQuestionAnswering with id2label (tasks/hf_tasks.py). A pooler
(or ELECTRA discriminator head) the file lacks is initialised as transformers does, and said once
here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from muppets.errors import ConfigError
from muppets.models.albert import AlbertConfig
from muppets.models.electra import ElectraConfig
from muppets.models.heads import PretrainingModel
from muppets.models.hf import save_hf_checkpoint
from muppets.models.hf_albert import save_hf_albert
from muppets.models.hf_electra import save_hf_electra
from muppets.models.hf_ernie import save_hf_ernie
from muppets.models.hf_xlnet import save_hf_xlnet
from muppets.models.xlnet import XLNetConfig
from muppets.tasks.hf_tasks import save_hf_task
from muppets.tasks.setup import save_task
from muppets.training.checkpoint import save_pretrained
from muppets.training.options import option
from muppets.training.pretrained import TOKENIZER_FILES, load_checkpoint, resolve_checkpoint

RESOLVED_CONFIG = "convert.toml"  # the CLI writes it into --out before the conversion


@dataclass
class ConvertConfig:
    input: str = option("checkpoint directory to convert", "")
    out: str = option("output directory", "")
    to: str = option("hf (transformers format) or muppets", "hf")
    hf_model_type: str = option(
        "with --to hf, a BERT as: bert (BertFor...) or ernie (ErnieForMaskedLM, ...)", "bert"
    )

    def __post_init__(self):
        if not self.input or not self.out:
            raise ConfigError("input and out are required")
        if self.to not in ("hf", "muppets"):
            raise ConfigError(f"to must be 'hf' or 'muppets', got {self.to!r}")
        if self.hf_model_type not in ("bert", "ernie"):
            raise ConfigError(
                f"hf_model_type must be 'bert' or 'ernie', got {self.hf_model_type!r}"
            )


def convert(config: ConvertConfig) -> Path:
    """Ours <-> transformers; tokenizer files travel along. A failed conversion leaves no output
    folder behind: what it wrote goes, and so does the folder when only the resolved config
    (convert.toml, written by the CLI first) is left in it."""
    out = Path(config.out)
    before = set(out.iterdir()) if out.is_dir() else set()
    try:
        return _convert(config, out)
    except BaseException:
        _remove_created(out, before)
        raise


def _convert(config: ConvertConfig, out: Path) -> Path:
    model, model_config, _, setup, absent = load_checkpoint(config.input)
    dropped = None
    source = resolve_checkpoint(config.input)
    tokenizer_files = [source / n for n in TOKENIZER_FILES if (source / n).exists()]
    if config.to == "hf":
        written = [out]
        if setup is not None:
            save_hf_task(model, model_config, setup, out)
        elif isinstance(model_config, ElectraConfig):  # discriminator in out, generator/ beside
            written = save_hf_electra(model, model_config, out)
        elif isinstance(model_config, AlbertConfig):
            save_hf_albert(model, model_config, out)
        elif isinstance(model_config, XLNetConfig):  # XLNetLMHeadModel or XLNetModel
            save_hf_xlnet(model, model_config, out)
        else:
            if getattr(model, "sbo_head", None) is not None:  # SpanBERT: BERT's shape
                dropped = "the span boundary (SBO) head"
                model = PretrainingModel(model.encoder, model.mlm_head, None)
            if config.hf_model_type == "ernie":  # ERNIE 1.0: BERT's network (hf_ernie.py)
                save_hf_ernie(model, model_config, out)
            else:
                save_hf_checkpoint(model, model_config, out)
        for f in tokenizer_files:
            for directory in written:
                shutil.copy2(f, directory / f.name)
        if isinstance(model_config, XLNetConfig):
            pad_on_the_left(out / "tokenizer_config.json")
    else:
        save_pretrained(out, model, model_config.to_dict(), extra_files=tokenizer_files)
        if setup is not None:
            save_task(out, setup)
    what = f", fine-tuned for {_task_line(setup)}" if setup is not None else ""
    print(f"convert: {source} -> {out} ({config.to} format{what})")
    if dropped:
        print(
            f"convert: {dropped} of {source} is for pretraining only: not written (transformers "
            "has no such head; a SpanBERT checkpoint is BERT's shape, BertForMaskedLM)"
        )
    std = model_config.initializer_range
    for part in absent:  # what transformers would initialise too when loading this file
        print(
            f"convert: no {part} in {source}: initialised as transformers does (normal, std {std})"
        )
    return out


def pad_on_the_left(path: Path) -> None:
    """XLNet reads its <cls> at the LAST position (XLNetForSequenceClassification's summary is
    hidden[:, -1]): transformers must pad on the left, whatever tokenizer the model was trained
    with (a WordPiece one pads on the right by default)."""
    if not path.is_file():
        return
    values = json.loads(path.read_text(encoding="utf-8"))
    if values.get("padding_side") != "left":
        values["padding_side"] = "left"
        path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _task_line(setup) -> str:
    labels = f": labels {', '.join(setup.labels)}" if setup.labels else ""
    return f"{setup.task} ({setup.head}{labels})"


def _remove_created(out: Path, before: set[Path]) -> None:
    if not out.is_dir():
        return
    for path in set(out.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    left = {p.name for p in out.iterdir()}
    if left <= {RESOLVED_CONFIG}:
        for name in left:
            (out / name).unlink()
        out.rmdir()
