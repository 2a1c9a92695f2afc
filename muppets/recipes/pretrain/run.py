"""`muppets pretrain`: one run, or its phases one after the other, each a call of train().

A run with phases (config.phases, `[[phases]]` in TOML) trains phase k in `<out>/phase-<k>`
from phase k-1's final weights, with a fresh optimizer and schedule (BERT's phases, Devlin et al.
A.2); `resume` skips the finished phases (those with result.json) and resumes the current one
from its newest checkpoint. Everything a phase needs is checked before the first one trains.
Works unchanged under `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from muppets.data.multilingual import SAMPLING_FILE, describe_record, recorded_sampling
from muppets.data.pretraining import PretrainingBatches, SpecialIds, evaluation_batches
from muppets.data.shards import MANIFEST, ShardedCorpus
from muppets.data.unit_masking import unit_view
from muppets.errors import ConfigError, InputError
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.recipes.pretrain.config import PretrainConfig
from muppets.recipes.pretrain.phases import merge_metrics, plot_phases
from muppets.tasks.electra_objective import ElectraObjective
from muppets.tasks.objectives import objective_for
from muppets.tokenization.families import family_note, load_any_tokenizer
from muppets.training import distributed as dist
from muppets.training.checkpoint import check_config, checkpoints, load_weights
from muppets.training.loop import train
from muppets.training.options import flat_options
from muppets.training.pretrained import TOKENIZER_FILES, resolve_checkpoint
from muppets.training.state import recorded_precision

RESULT = "result.json"


def held_out_batches(config: PretrainConfig, tokenizer, rank: int = 0, world_size: int = 1):
    """The fixed, masked held-out micro-batches a run evaluates on (rank r keeps its share): the
    same for the run, its unigram baseline and any later look at it (bench/)."""
    valid_corpus = ShardedCorpus(config.valid_data)
    valid_corpus.check_tokenizer(tokenizer.fingerprint())
    t = tokenizer
    return evaluation_batches(
        valid_corpus,
        config.eval_data_config(),
        SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size),
        continuation=t.continuation_mask() if config.masking != "token" else None,
        max_instances=config.eval_instances,
        rank=rank,
        world_size=world_size,
    )


def pretrain(config: PretrainConfig) -> dict:
    """Train; returns the (last phase's) result: step, tokens, losses, checkpoint."""
    for each in [config, *config.phase_configs()]:
        check_data(each)
    info = dist.init_distributed(None if config.device == "auto" else config.device)
    try:
        # Resolved once for the run (every phase); a resumed run keeps its own unless told.
        arithmetic = config.arithmetic.start(
            info.device, _recorded_precision(config), show=dist.rank() == 0
        )
        config = dataclasses.replace(config, arithmetic=arithmetic)
        if not config.phases:
            return run_once(config, info.device)
        return run_phases(config, info.device)
    finally:
        dist.cleanup()


def check_data(config: PretrainConfig) -> None:
    """train_data and valid_data are directories from `muppets prepare`, said by their option's
    name (not by what the first reader of them misses)."""
    for name in ("train_data", "valid_data"):
        path = getattr(config, name)
        if not path:
            continue
        if not Path(path).is_dir():
            raise ConfigError(f"{name} {path}: no such directory (one from `muppets prepare`)")
        if not (Path(path) / MANIFEST).is_file():
            raise ConfigError(
                f"{name} {path}: no {MANIFEST} here (not a directory from `muppets prepare`, "
                "or one it did not finish)"
            )


def _recorded_precision(config: PretrainConfig) -> str | None:
    """The precision of the run (of its newest phase with checkpoints) that --resume continues."""
    if not config.run.resume:
        return None
    if not config.phases:
        return recorded_precision(config.out, config.run.resume_from)
    found = (recorded_precision(phase.out) for phase in reversed(config.phase_configs()))
    return next((precision for precision in found if precision is not None), None)


def run_phases(config: PretrainConfig, device) -> dict:
    plan = config.phase_configs()
    check_plan(config, plan)
    if config.run.resume_from:  # which phases to redo would be a guess: say so instead
        raise ConfigError("resume_from is for runs without phases; --resume takes the newest")
    results = []
    for k, phase in enumerate(plan, 1):
        directory = Path(phase.out)
        if config.run.resume and (directory / RESULT).is_file():
            results.append(json.loads((directory / RESULT).read_text(encoding="utf-8")))
            continue  # finished: its final checkpoint is what the next phase starts from
        resume = config.run.resume and bool(checkpoints(directory / "checkpoints"))
        if not resume and dist.rank() == 0:  # a phase killed before its first checkpoint
            (directory / "metrics.jsonl").unlink(missing_ok=True)
        phase.run.resume = resume
        results.append(run_once(phase, device, phase=(k, len(plan))))
    if dist.rank() == 0:
        summary = {"config": flat_options(config), **results[-1], "phases": results}
        (Path(config.out) / RESULT).write_text(json.dumps(summary, indent=2) + "\n")
    return results[-1]


def check_plan(config: PretrainConfig, plan: list[PretrainConfig]) -> None:
    """What a phase needs that only the data, the processes and the model preset tell: one
    vocabulary for all (the weights carry over), a batch that the processes share evenly, and a
    position table long enough for every phase."""
    first = load_any_tokenizer(plan[0].train_data).fingerprint()
    positions = preset_config(config.model).max_sequence_length
    for k, phase in enumerate(plan, 1):
        for name in ("train_data", "valid_data"):
            path = getattr(phase, name)
            corpus = ShardedCorpus(path) if path else None
            if corpus and corpus.tokenizer_fingerprint != first:
                raise ConfigError(
                    f"phases[{k}].{name} {path}: another tokenizer than phases[1].train_data's "
                    "(the weights carry over, so every phase needs the same vocabulary)"
                )
            try:  # ERNIE's phrase and entity phases need those units in the shards
                if corpus:
                    unit_view(corpus, phase.masking)
            except InputError as error:
                raise InputError(f"phases[{k}]: {error.message}", error.path) from None
        try:  # micro-batches x processes must divide every phase's batch
            phase.batches.accumulation(dist.world_size())
        except ConfigError as error:
            raise ConfigError(f"phases[{k}]: {error.message}") from None
        if phase.max_seq_length > positions:
            raise ConfigError(
                f"phases[{k}].max_seq_length {phase.max_seq_length} is longer than model "
                f"{config.model!r} takes ({positions} positions)"
            )


def run_once(config: PretrainConfig, device, phase: tuple[int, int] | None = None) -> dict:
    """One call of train(): a run without phases, or phase `k` of `n` (phase=(k, n))."""
    rank, world = dist.rank(), dist.world_size()
    tokenizer = load_any_tokenizer(config.train_data)
    train_corpus = ShardedCorpus(config.train_data)
    train_corpus.check_tokenizer(tokenizer.fingerprint())
    t = tokenizer
    ids = SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size)
    sampling = recorded_sampling(config.train_data)  # several languages: prepare's rates
    if sampling and rank == 0:
        print(describe_record(sampling), flush=True)
    data = config.data_config()
    continuation = tokenizer.continuation_mask() if data.masking != "token" else None
    batches = PretrainingBatches(
        train_corpus, data, ids, continuation=continuation, rank=rank, world_size=world
    )
    eval_fn = None
    if config.valid_data:
        held_out = held_out_batches(config, tokenizer, rank=rank, world_size=world)

        def eval_fn():
            return held_out

    dropout = {}
    if config.dropout is not None:
        dropout = {"hidden_dropout_prob": config.dropout}
        dropout["attention_probs_dropout_prob"] = config.dropout
    model_config = preset_config(
        config.model,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_id,
        pre_layer_norm=config.pre_layer_norm,
        **dropout,
    )
    note = family_note(model_config.model_type, tokenizer)
    if note and rank == 0 and (phase is None or phase[0] == 1):
        print(note, flush=True)
    if model_config.max_sequence_length < config.max_seq_length:
        raise ConfigError(
            f"max_seq_length {config.max_seq_length} is longer than model {config.model!r} "
            f"takes ({model_config.max_sequence_length} positions)"
        )
    torch.manual_seed(config.run.seed)  # the same initial weights on every rank
    pair = config.objective in ("mlm+nsp", "mlm+sop")
    sbo = config.objective == "mlm+sbo"
    model = build_pretraining_model(model_config, with_pair_head=pair, with_sbo_head=sbo)
    if config.init_from and not config.run.resume:
        _load_initial_weights(model, model_config, tokenizer, config.init_from)
    model.to(device)
    extra = [Path(config.train_data) / name for name in (*TOKENIZER_FILES, SAMPLING_FILE)]
    result = train(
        model,
        _objective(config, ids),
        batches,
        config.train_config(data.accumulation_steps(world), config.arithmetic.precision),
        config.out,
        config_dict=model_config.to_dict(),
        eval_batches_fn=eval_fn,
        resume=config.run.resume,
        resume_from=config.run.resume_from,
        extra_files=[p for p in extra if p.exists()],
    )
    if phase is not None:
        result = {"phase": phase[0], **result}
    if rank == 0:
        summary = {"config": flat_options(config), **result}
        if sampling:
            summary["sampling"] = sampling
        (Path(config.out) / RESULT).write_text(json.dumps(summary, indent=2) + "\n")
        if phase is not None:
            _merge_phases(Path(config.out).parent, phase[1])
        print(_summary_line(result))
    return result


def _merge_phases(out: Path, count: int) -> None:
    """The run directory's metrics.jsonl and loss.png, over the phases trained so far."""
    records = merge_metrics(out, count)
    labels = []
    for k in range(1, count + 1):
        saved = out / f"phase-{k}" / RESULT
        if saved.is_file():
            options = json.loads(saved.read_text(encoding="utf-8"))["config"]
            labels.append(f"phase {k}: {options['max_seq_length']} tokens")
    plot_phases(records, labels, out / "loss.png")


def _objective(config: PretrainConfig, ids: SpecialIds):
    if config.objective != "electra":
        return objective_for(config.objective)
    # ELECTRA masks inside the step (pretrain_helpers.mask) at the run's rate and cap.
    return ElectraObjective(
        mask_id=ids.mask_id,
        special_ids=(ids.cls_id, ids.sep_id, ids.mask_id),
        masked_lm_prob=config.masked_lm_prob,
        max_predictions_per_seq=config.max_predictions_per_seq,
    )


_MAY_DIFFER = {"hidden_dropout_prob", "attention_probs_dropout_prob"}


def _load_initial_weights(model, model_config, tokenizer, init_from: str) -> None:
    """The weights of a finished run or checkpoint, for a run that goes on from it under other data
    settings (Devlin et al. A.2: 90% of the steps at 128 tokens, then 512 from those weights)."""
    directory = resolve_checkpoint(init_from)
    if load_any_tokenizer(directory).fingerprint() != tokenizer.fingerprint():
        raise InputError("init_from: the checkpoint has another vocabulary", directory)
    check_config(directory, model_config.to_dict(), may_differ=_MAY_DIFFER)
    load_weights(model, directory)


def _summary_line(result: dict) -> str:
    scores = result.get("eval") or {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()) if k != "loss")
    return (
        f"pretrain: {result['step']} steps ({result['stopped']}), "
        f"{result['tokens_seen']:,} tokens, train loss {result['train_loss']:.4f}"
        + (f"; held-out {shown}" if shown else "")
        + f"; checkpoint {result['checkpoint']}"
    )
