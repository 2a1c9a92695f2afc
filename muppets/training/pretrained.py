"""Checkpoint directories -> models of any family, for every recipe that starts from one.

A muppets checkpoint directory holds config.json (a family's config fields, named as Hugging Face
names them), model.safetensors with our state-dict names, and the family's vocabulary files:
the WordPiece tokenizer files for BERT-family encoders, word_vocab.txt for ELMo. A fine-tuned
directory adds task.json (tasks/setup.py). A Hugging Face directory is told apart by the
"architectures" key that transformers writes in config.json; any of its shapes loads (with or
without pooler, MLM head, NSP head; a task model is a fine-tuned model, tasks/hf_tasks.py). A run
directory stands for its newest checkpoint (a run in phases: its last phase's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from torch import nn

from muppets.errors import ConfigError, InputError
from muppets.models.albert import AlbertConfig
from muppets.models.bert import BertConfig
from muppets.models.electra import ElectraConfig, ElectraPretrainingModel
from muppets.models.elmo import ElmoBiLM, ElmoConfig
from muppets.models.heads import PretrainingModel
from muppets.models.hf import read_hf_checkpoint
from muppets.models.hf_albert import read_hf_albert
from muppets.models.hf_electra import read_hf_electra, refuse_generator
from muppets.models.hf_ernie import ernie_config_to_bert, is_ernie, read_hf_ernie
from muppets.models.hf_xlnet import read_hf_xlnet
from muppets.models.registry import CONFIGS, MODELS, build_encoder, build_pretraining_model
from muppets.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel
from muppets.models.xlnet import XLNetConfig
from muppets.tasks.hf_tasks import hf_task_class, load_hf_task
from muppets.tasks.registry import build_head
from muppets.tasks.setup import TASK_FILE, TaskSetup, load_task
from muppets.tokenization.families import load_any_tokenizer
from muppets.tokenization.wordpiece import WordPieceTokenizer
from muppets.tokenization.words import WordVocabulary
from muppets.training.checkpoint import CONFIG, checkpoints, load_weights, read_config

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
WORD_VOCABULARY_FILE = "word_vocab.txt"  # ELMo's words, bilm-tf's vocabulary format


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its newest checkpoint; in a run with phases,
    `phase-<k>/`, the newest of the last phase that has one)."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    phases = [p for p in path.glob("phase-*") if p.name[len("phase-") :].isdigit()]
    phases.sort(key=lambda p: int(p.name[len("phase-") :]), reverse=True)
    for run in [path, *phases]:
        saved = checkpoints(run / "checkpoints")
        if saved:
            return saved[-1]
    raise InputError("not a checkpoint (no config.json) nor a run with checkpoints", path)


def bert_config(directory: Path) -> BertConfig | ElectraConfig:
    """The config of a BERT-family checkpoint (ELECTRA's by its model_type); a bad field names
    its config.json."""
    values = read_config(directory)
    refuse_generator(values, directory / CONFIG)
    if is_ernie(values):  # ERNIE 1.0 is BERT's network (models/hf_ernie.py)
        values = ernie_config_to_bert(values)
    kind = values.get("model_type", "bert")  # old transformers files name only the class
    if kind not in MODELS:
        raise ConfigError(
            f"config field model_type={kind!r}: not a BERT-family model; supported here: "
            + ", ".join(MODELS),
            directory / CONFIG,
        )
    config_class = CONFIGS.get(values.get("model_type"), BertConfig)
    try:
        return config_class.from_dict(values)
    except ConfigError as e:
        raise ConfigError(e.message, directory / CONFIG) from None


def check_vocabulary(tokenizer: WordPieceTokenizer, config: BertConfig, where: object) -> None:
    if tokenizer.vocab_size != config.vocab_size:
        size = "larger" if config.vocab_size > tokenizer.vocab_size else "smaller"
        raise InputError(
            f"vocab_size={config.vocab_size} is {size} than the tokenizer's "
            f"{tokenizer.vocab_size} tokens: they come from different vocabularies",
            where,
        )


def check_albert_tokenizer(directory: Path, tokenizer) -> None:
    """A transformers ALBERT directory tokenizes with SentencePiece (AlbertTokenizer); a WordPiece
    vocabulary there is another model's, unless tokenizer_config.json says it is a BERT tokenizer
    (as `muppets convert --to hf` writes for an ALBERT pretrained here on WordPiece shards)."""
    if not isinstance(tokenizer, WordPieceTokenizer):
        return
    settings = directory / "tokenizer_config.json"
    named = None
    if settings.is_file():  # load_tokenizer has read it: valid JSON
        named = json.loads(settings.read_text(encoding="utf-8")).get("tokenizer_class")
    if named != "BertTokenizer":
        file = directory / "tokenizer.json"
        file = file if file.is_file() else directory / "vocab.txt"
        raise InputError(
            "a WordPiece tokenizer in an ALBERT checkpoint: ALBERT's is SentencePiece (a "
            "tokenizer.json with a Unigram model, as AlbertTokenizerFast saves it)",
            file,
        )


class Checkpoint(NamedTuple):
    """Any BERT-family checkpoint as it comes: a pretraining model (its heads, or the encoder
    alone), or a fine-tuned one with its task setup."""

    model: nn.Module  # in eval mode: a PretrainingModel (ELECTRA's) or a task head model
    config: BertConfig | ElectraConfig
    tokenizer: WordPieceTokenizer
    setup: TaskSetup | None  # a fine-tuned model's (task.json, or a transformers task model's)
    # "pooler", "discriminator head": not in the file, initialised as transformers does
    absent: tuple[str, ...] = ()


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint or run directory of any shape; model and tokenizer vocabularies must agree."""
    directory = resolve_checkpoint(path)
    config = bert_config(directory)
    tokenizer = load_any_tokenizer(directory)
    check_vocabulary(tokenizer, config, directory / CONFIG)  # checked first: the clearest message
    values = read_config(directory)
    if isinstance(config, AlbertConfig) and "architectures" in values:
        check_albert_tokenizer(directory, tokenizer)
    if (directory / TASK_FILE).is_file() or hf_task_class(values):
        model, setup, _ = load_finetuned(directory)
        return Checkpoint(model, config, tokenizer, setup)
    if isinstance(config, ElectraConfig):
        if "architectures" in values:
            config, model, absent = read_hf_electra(directory)
            return Checkpoint(model, config, tokenizer, None, absent)
        return Checkpoint(_load_electra(directory, config).eval(), config, tokenizer, None)
    if "architectures" in values:
        read = read_hf_albert if isinstance(config, AlbertConfig) else read_hf_checkpoint
        read = read_hf_xlnet if isinstance(config, XLNetConfig) else read
        read = read_hf_ernie if is_ernie(values) else read
        loaded = read(directory)
        return Checkpoint(loaded.model, loaded.config, tokenizer, None, loaded.absent)
    weights = directory / "model.safetensors"
    try:
        with safe_open(weights, framework="pt") as f:
            names = set(f.keys())
    except Exception as e:  # safetensors raises several types for a bad header
        raise InputError(f"cannot read safetensors weights: {e}", weights) from None
    has_pair_head = any(k.startswith("pair_head.") for k in names)
    has_mlm_head = any(k.startswith("mlm_head.") for k in names)
    has_sbo_head = any(k.startswith("sbo_head.") for k in names)  # SpanBERT's
    model = build_pretraining_model(config, has_pair_head, has_mlm_head, has_sbo_head)
    load_weights(model, directory)
    return Checkpoint(model.eval(), config, tokenizer, None)


def load_pretrained(path: str | Path) -> tuple[PretrainingModel, BertConfig, WordPieceTokenizer]:
    """(model in eval mode, config, tokenizer); model and tokenizer vocabularies must agree.
    A fine-tuned model stands for its encoder (with no pretraining heads)."""
    loaded = load_checkpoint(path)
    model = loaded.model
    if loaded.setup is not None:
        model = PretrainingModel(model.encoder, None, None).eval()
    return model, loaded.config, loaded.tokenizer


def _load_electra(directory: Path, config: ElectraConfig) -> nn.Module:
    """Our checkpoint's towers; its `encoder` is the discriminator. The generator's copy of
    the shared embeddings, when stored, must be the discriminator's."""
    weights = directory / "model.safetensors"
    try:
        with safe_open(weights, framework="pt") as f:
            names = set(f.keys())
            for name in sorted(n for n in names if n.startswith("generator.embeddings.")):
                twin = "discriminator." + name[len("generator.") :]
                if twin in names and not torch.equal(f.get_tensor(name), f.get_tensor(twin)):
                    raise InputError(
                        f"the generator's and the discriminator's embeddings disagree ({name}): "
                        "ELECTRA's towers share them",
                        weights,
                    )
    except InputError:
        raise
    except Exception as e:  # safetensors raises several types for a bad header
        raise InputError(f"cannot read safetensors weights: {e}", weights) from None
    with_generator = any(n.startswith("generator.") for n in names)
    model = ElectraPretrainingModel(config, with_generator=with_generator)
    load_weights(model, directory)
    return model


def load_elmo(path: str | Path) -> tuple[ElmoBiLM, ElmoConfig, WordVocabulary | None]:
    """(biLM in eval mode, config, word vocabulary or None) of a checkpoint or run directory.
    Anything but an ELMo checkpoint is an InputError naming its config.json."""
    directory = resolve_checkpoint(path)
    values = read_config(directory)
    kind = values.get("model_type")
    if kind != "elmo":
        what = f"model_type {kind!r}" if kind is not None else "no model_type"
        raise InputError(
            f"has {what}, not 'elmo': an ELMo checkpoint is needed", directory / CONFIG
        )
    try:
        config = ElmoConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(error.message, directory / CONFIG) from None
    model = ElmoBiLM(config)
    load_weights(model, directory)
    vocabulary_file = directory / WORD_VOCABULARY_FILE
    vocabulary = WordVocabulary.load(vocabulary_file) if vocabulary_file.is_file() else None
    return model.eval(), config, vocabulary


def resolve_finetuned(path: str | Path) -> Path:
    """A fine-tuned directory (ours, or a transformers task model's), or a multi-seed run (its
    best seed, from summary.json)."""
    path = Path(path)
    if (path / TASK_FILE).is_file():
        return path
    if (path / CONFIG).is_file() and hf_task_class(read_config(path)):
        return path
    summary = path / "summary.json"
    if summary.is_file():
        best = json.loads(summary.read_text(encoding="utf-8"))["best_seed"]
        return path / f"seed-{best}"
    raise InputError(f"not a fine-tuned model: no {TASK_FILE} (run `muppets finetune`)", path)


def load_finetuned(path: str | Path) -> tuple[nn.Module, TaskSetup, WordPieceTokenizer]:
    """(head model in eval mode, its task setup, tokenizer); vocabularies must agree."""
    directory = resolve_finetuned(path)
    config = bert_config(directory)
    tokenizer = load_any_tokenizer(directory)
    check_vocabulary(tokenizer, config, directory / CONFIG)
    if not (directory / TASK_FILE).is_file():  # a transformers task model
        loaded = load_hf_task(directory)
        return loaded.model, loaded.setup, tokenizer
    setup = load_task(directory)
    model = build_head(setup.spec, build_encoder(config), len(setup.labels), pooling=setup.pooling)
    load_weights(model, directory)
    return model.eval(), setup, tokenizer


def eos_id(tokenizer) -> int:
    """The token after every document: [SEP] (WordPiece) or </s> (BPE, Unigram)."""
    return tokenizer.sep_id


def load_transfo_xl(path: str | Path):
    """(model, config, tokenizer) of a pretrain-lm checkpoint or run directory."""
    directory = resolve_checkpoint(path)
    values = read_config(directory)
    if values.get("model_type") != "transfo-xl":
        raise InputError(
            f"not a Transformer-XL checkpoint (model_type {values.get('model_type')!r}): "
            "give a pretrain-lm run or checkpoint",
            directory / "config.json",
        )
    config = TransfoXLConfig.from_dict(values)
    model = TransfoXLLMHeadModel(config)
    load_weights(model, directory)
    return model, config, load_any_tokenizer(directory)
