"""The encoder path of `muppets finetune`: a pretrained (or from-scratch) BERT-family encoder with a
task head, all weights fine-tuned, or (--freeze) only the head on frozen encoder features.

Devlin et al. 2019 section 4 and appendix A.3; the seed's run itself is seeds.py's. A fine-tuned
directory is config.json (the encoder's), model.safetensors (encoder + head), the tokenizer files
and task.json (tasks/setup.py), which `muppets evaluate` and `predict` load.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple

from torch import nn

from muppets.data.task_features import collate_features
from muppets.errors import ConfigError, InputError
from muppets.models.registry import PRESETS, build_encoder, preset_config
from muppets.recipes.finetune.seeds import SeedParts
from muppets.tasks.hf_tasks import family_pooling
from muppets.tasks.prediction import evaluate_examples
from muppets.tasks.registry import build_head, label_counts, task_objective, task_spec
from muppets.tasks.setup import TaskSetup, save_task
from muppets.tokenization.families import load_any_tokenizer
from muppets.tokenization.wordpiece import WordPieceTokenizer
from muppets.training.checkpoint import read_config
from muppets.training.device import pick_device
from muppets.training.precision import autocast
from muppets.training.pretrained import check_vocabulary, load_pretrained, resolve_checkpoint


class Prepared(NamedTuple):
    """A task read and featurized once, shared by its seeds."""

    setup: TaskSetup
    tokenizer: WordPieceTokenizer
    train_examples: list
    train_features: list
    dev: dict[str, list]  # dev split -> examples
    dev_features: dict[str, list]


def prepare_encoder_task(
    config, name: str, train_path: Path, dev_paths: dict, labels: list[str]
) -> Prepared:
    """The task tokenized and featurized once, for every seed of an encoder run."""
    spec, columns = task_spec(name), config.columns()
    tokenizer = _tokenizer(config)
    setup = TaskSetup(
        task=name,
        head=spec.head,
        labels=labels,
        pooling=config.pooling or _family_pooling(config.model),
        max_seq_length=config.max_seq_length or spec.max_seq_length,
        columns=vars(columns) if spec.reader == "table" else {},
        doc_stride=config.doc_stride,
        max_query_length=config.max_query_length,
        max_answer_length=config.max_answer_length,
        null_threshold=config.null_threshold,
    )
    train_examples = setup.read(train_path, "train", errors=config.errors)
    dev = {s: setup.read(p, s, errors=config.errors) for s, p in dev_paths.items()}
    if spec.head == "classification":
        print(f"{name}: " + label_counts(labels, {"train": train_examples, **dev}))
    if spec.head == "span_qa":  # SQuAD v2.0 when any question is unanswerable
        everything = train_examples + [e for examples in dev.values() for e in examples]
        setup.squad_v2 = any(e.is_impossible for e in everything)
    featurized = setup.featurize(train_examples, tokenizer)
    train_features = [f for f in featurized if f.targets]  # QA: no usable answer offset
    dev_features = {s: setup.featurize(examples, tokenizer) for s, examples in dev.items()}
    skipped = len({f.example for f in featurized}) - len({f.example for f in train_features})
    if not train_features:  # every SQuAD answer dropped: say so, with the file
        why = f"{skipped} questions without a usable answer" if skipped else "no examples"
        raise InputError(f"nothing to train on: {why}", train_path)
    if skipped:
        print(f"{name}: {skipped} training questions without a usable answer are not trained on")
    return Prepared(setup, tokenizer, train_examples, train_features, dev, dev_features)


def _family_pooling(model: str) -> str:
    """No --pooling: the head of the family's transformers sequence classifier (ELECTRA's own
    dense + GELU head, the others' pooler), so the fine-tuned model converts to it."""
    if model in PRESETS:
        kind = PRESETS[model].get("model_type", "bert")
    else:
        kind = read_config(resolve_checkpoint(model)).get("model_type", "bert")
    return family_pooling(kind)


def _tokenizer(config):
    """--tokenizer, else the checkpoint's own (a preset from scratch needs --tokenizer)."""
    if config.tokenizer:
        return load_any_tokenizer(config.tokenizer)
    if config.model in PRESETS:
        raise ConfigError(f"--model {config.model} starts from scratch: give --tokenizer DIR")
    return load_any_tokenizer(resolve_checkpoint(config.model))


def load_encoder(config, tokenizer, max_seq_length: int):
    """(encoder, its config): a preset from scratch sized to the tokenizer, or a checkpoint's
    encoder, whose vocabulary must be the tokenizer's. Either way its hidden and attention dropout
    are config.dropout: a checkpoint pretrained without dropout (configs/bert-mini.toml) is still
    fine-tuned with it, as the model from scratch is."""
    if config.model in PRESETS:
        sizes = dict(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
        kind = PRESETS[config.model]["model_type"]
        if kind != "xlnet":  # XLNet's relative positions have no table to size
            sizes["max_position_embeddings"] = max(512, max_seq_length)
        model_config = preset_config(config.model, **sizes, **_dropout(kind, config.dropout))
        encoder = build_encoder(model_config)
    else:
        pretrained, model_config, own = load_pretrained(config.model)
        check_vocabulary(tokenizer, model_config, config.tokenizer or config.model)
        if own.backend.get_vocab() != tokenizer.backend.get_vocab():
            where = config.tokenizer
            message = f"the tokenizer's vocabulary is not the checkpoint's ({config.model})"
            raise InputError(message + ": they come from different vocabularies", where)
        encoder = pretrained.encoder
        dropout = _dropout(model_config.model_type, config.dropout)
        model_config = dataclasses.replace(model_config, **dropout)
        set_dropout(encoder, config.dropout, config.dropout)  # in place: no new random weights
    if max_seq_length > model_config.max_sequence_length:
        raise ConfigError(
            f"max_seq_length={max_seq_length} exceeds the model's "
            f"{model_config.max_sequence_length} positions"
        )
    return encoder, model_config


def _dropout(model_type: str, rate: float) -> dict[str, float]:
    """The config fields of a family's dropout: XLNet has one rate for everything."""
    if model_type == "xlnet":
        return {"dropout": rate}
    return {"hidden_dropout_prob": rate, "attention_probs_dropout_prob": rate}


def set_dropout(encoder: nn.Module, hidden: float, attention: float) -> None:
    """Every dropout of a built encoder: nn.Dropout modules are the hidden dropout; attention
    keeps its rate as a float `dropout` (SelfAttention hands it to scaled_dot_product_attention)."""
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = hidden
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = attention


def freeze_encoder(encoder: nn.Module) -> None:
    """Frozen features: no gradients and no dropout inside the encoder (the features are fixed)."""
    encoder.requires_grad_(False)
    set_dropout(encoder, 0.0, 0.0)


def encoder_parts(config, data: Prepared, seed: int) -> SeedParts:
    """An encoder and its head, built under the seed, as seeds.run_seed trains them."""
    setup, tokenizer = data.setup, data.tokenizer
    spec = setup.spec
    encoder, model_config = load_encoder(config, tokenizer, setup.max_seq_length)
    model = build_head(spec, encoder, len(setup.labels), config.dropout, setup.pooling)
    if config.freeze:
        freeze_encoder(encoder)
    device = pick_device(config.device)
    model.to(device)
    precision = config.arithmetic.resolve(device)  # finetune() resolved (and printed) it

    def score(model: nn.Module, split: str):
        return evaluate_examples(
            model,
            setup,
            data.dev[split],
            data.dev_features[split],
            tokenizer.pad_id,
            config.eval_batch_size,
            functools.partial(autocast, precision, device),
        )

    def save(run_dir: Path) -> None:
        tokenizer.save(run_dir)
        save_task(run_dir, setup)

    return SeedParts(
        setup=setup,
        model=model,
        objective=task_objective(spec),
        optimization=config.optimization,
        config_dict=model_config.to_dict(),
        train_examples=len(data.train_examples),
        train_features=data.train_features,
        collate=functools.partial(collate_features, pad_id=tokenizer.pad_id),
        examples=data.dev,
        score=score,
        save=save,
        metrics={"freeze": config.freeze},
    )
