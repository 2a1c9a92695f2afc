"""`muppets quickstart`: the whole story in one command, stage by stage, under one budget.

On the bundled sample (muppets/samples: 2 MB of Wikipedia, 6,000 SST-2 sentences) by default, or
with `--data-dir DIR` on DIR/wikipedia-en-extract/wiki.train.0*.txt and DIR/glue/SST-2:
  1. a WordPiece tokenizer trained on the text, and the text tokenized into shards;
  2. a small BERT pretrained (MLM + NSP) and a small ELMo biLM, each under a time budget;
  3. SST-2: the BERT fine-tuned, the BERT frozen under a linear head, the same architecture from
     scratch, the ELMo frozen under a biLSTM, random embeddings under the same biLSTM, and a bag
     of (random, trained) embeddings; one seed each;
  4. a fill-mask example, a comparison table, report.html, report.json and the PNG figures.
Each stage runs in `<out>/<stage>/` and leaves a done.json (stages.py): Ctrl-C and the same
command again resume from the finished stages. `<out>/settings.json` pins the settings that
decide the results; another `--budget` or `--data-dir` needs another `--out`.

The budget (`--budget`, 12m on the sample, 1h with --data-dir) is split over the stages by the
fixed SHARES below. Pretraining gets its share as the loop's time budget (less what the stage
spends around the loop: the vocabulary pass, held-out evaluation, saving). Fine-tuning has no time
cap, so its epochs, and if even one epoch does not fit a random subset of the training set, are
sized to the share (comparison.py): the cost per token of each kind of run is a fixed multiple
of the BERT pretraining throughput just measured on this machine.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from muppets.data.prepare import PrepareConfig, TokenizerTrainConfig, prepare_corpus
from muppets.data.prepare import train_tokenizer as train_wordpiece
from muppets.errors import ConfigError, InputError
from muppets.models.elmo import PRESETS as ELMO_PRESETS
from muppets.models.registry import PRESETS as BERT_PRESETS
from muppets.quickstart import comparison, report
from muppets.quickstart.stages import Stage, StageContext, run_stages
from muppets.recipes.fill_mask import fill_mask
from muppets.recipes.pretrain import PretrainConfig, pretrain
from muppets.recipes.pretrain_elmo import ElmoPretrainConfig, pretrain_elmo
from muppets.training.budget import parse_duration
from muppets.training.checkpoint import checkpoints
from muppets.training.options import from_options
from muppets.training.pretrained import load_pretrained

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Shares of the budget; they add up to 1.
SHARES = {"tokenizer": 0.01, "shards": 0.02, "bert": 0.35, "elmo": 0.22, "fill-mask": 0.01,
          "bert-finetuned": 0.08, "bert-frozen": 0.03, "bert-scratch": 0.08, "elmo-bilstm": 0.08,
          "random-bilstm": 0.08, "bag-of-embeddings": 0.02, "report": 0.02}  # fmt: skip
LOOP_SHARE = 0.85  # of a pretraining stage's seconds, for the training loop itself
FILL_MASK_TEXTS = ("he was born in [MASK] .", "the film was released in [MASK] .",
                   "she is an american [MASK] and writer .")  # fmt: skip


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class QuickstartConfig:
    out: str = _help("output directory (rerun the same command to resume)", "runs/quickstart")
    data_dir: str | None = _help(
        "folder with wikipedia-en-extract/ and glue/SST-2/; none: the bundled sample", None
    )
    budget: str | None = _help("wall-clock budget of the whole run, split over the stages; "
                               "none: 12m, or 1h with --data-dir", None)  # fmt: skip
    vocab_size: int = _help("WordPiece vocabulary size", 8000)
    lowercase: bool = _help("lowercase the text", True)
    bert_model: str = _help("BERT preset pretrained and fine-tuned", "bert-tiny")
    elmo_model: str = _help("ELMo preset pretrained", "elmo-small")
    max_pretrain_steps: int = _help("upper bound on the steps of each pretraining", 1_000_000)
    max_epochs: int = _help("upper bound on fine-tuning epochs", 10)
    max_train_examples: int = _help("fine-tune on at most this many (0: what the budget allows)", 0)
    seed: int = _help("seed of pretraining and fine-tuning", 1)
    # One thread: these models are small, so a second intra-op thread gains little on an idle
    # 2-core machine (bert-tiny pretraining about 33k against 20k tokens/s) and loses up to 8x
    # when anything else runs (2.2k against 18.8k tokens/s beside two other jobs).
    threads: int = _help("torch CPU threads (0: torch's default, all cores)", 1)
    device: str = _help("cpu, cuda or auto", "auto")

    def __post_init__(self):
        parse_duration(self.budget_text())
        rules = [("vocab_size", self.vocab_size >= 100, ">= 100"),
                 ("bert_model", self.bert_model in BERT_PRESETS, "one of " + ", ".join(
                     p for p in BERT_PRESETS if p.startswith("bert"))),
                 ("elmo_model", self.elmo_model in ELMO_PRESETS, "one of " + ", ".join(
                     ELMO_PRESETS)),
                 ("max_pretrain_steps", self.max_pretrain_steps >= 1, ">= 1"),
                 ("max_epochs", self.max_epochs >= 1, ">= 1"),
                 ("max_train_examples", self.max_train_examples >= 0, ">= 0"),
                 ("threads", self.threads >= 0, ">= 0")]  # fmt: skip
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    def budget_text(self) -> str:
        return self.budget or ("1h" if self.data_dir else "12m")


@dataclass(frozen=True)
class Inputs:
    train_text: list[str]  # files or globs
    valid_text: list[str]
    sst2: Path  # holding train.tsv and dev.tsv


def find_inputs(config: QuickstartConfig) -> Inputs:
    if config.data_dir is None:
        inputs = Inputs([str(SAMPLES / "wiki.train.txt")], [str(SAMPLES / "wiki.valid.txt")],
                        SAMPLES / "SST-2")  # fmt: skip
    else:
        wiki = Path(config.data_dir) / "wikipedia-en-extract"
        inputs = Inputs([str(wiki / "wiki.train.0*.txt")], [str(wiki / "wiki.valid.txt")],
                        Path(config.data_dir) / "glue" / "SST-2")  # fmt: skip
    for pattern in inputs.train_text + inputs.valid_text:
        if not glob.glob(pattern):
            raise InputError("no such text file", pattern)
    for split in ("train.tsv", "dev.tsv"):
        if not (inputs.sst2 / split).is_file():
            raise InputError("no SST-2 file here", inputs.sst2 / split)
    return inputs


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run (or resume) every stage; print the table; returns report.json's contents."""
    out, inputs = Path(config.out), find_inputs(config)
    pin_settings(config, out)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        records = run_stages(build_stages(config, inputs), out,
                             parse_duration(config.budget_text()))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "report.json").read_text(encoding="utf-8"))
    summary["stage_seconds"] = {name: r["seconds"] for name, r in records.items()}
    print("\n" + report.format_table(summary["rows"]))
    print(f"\nreport: {out / 'report.html'} (figures and report.json beside it)")
    return summary


def pin_settings(config: QuickstartConfig, out: Path) -> None:
    """settings.json: what decides the results. A resumed run must have the same."""
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("out", "threads", "device")}  # fmt: skip
    settings["budget"] = config.budget_text()
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: [before.get(k), v] for k, v in settings.items() if before.get(k) != v}
        if changed:
            shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{out} holds a quickstart with other settings ({shown}): rerun "
                              "with the same ones to resume, or give a new --out")  # fmt: skip
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def build_stages(config: QuickstartConfig, inputs: Inputs) -> list[Stage]:
    def stage(name, title, run, needs=()):
        return Stage(name, title, SHARES[name], run, needs)

    bert, elmo = config.bert_model, config.elmo_model
    rows = [stage(row, f"SST-2: {report.ROWS[row]}", _row_stage(config, inputs, row), needs)
            for row, needs in comparison.NEEDS.items()]  # fmt: skip
    return [
        stage("tokenizer", f"train a {config.vocab_size:,}-token WordPiece tokenizer",
              lambda ctx: train_tokenizer(config, inputs, ctx)),
        stage("shards", "tokenize the text into shards", lambda ctx: prepare_shards(inputs, ctx),
              ("tokenizer",)),
        stage("bert", f"pretrain BERT ({bert}, MLM + NSP)",
              lambda ctx: pretrain_bert(config, ctx), ("shards",)),
        stage("elmo", f"pretrain ELMo ({elmo}, biLM)",
              lambda ctx: pretrain_bilm(config, inputs, ctx)),
        stage("fill-mask", "fill-mask with the pretrained BERT", fill_mask_examples, ("bert",)),
        *rows,
        stage("report", "write the report",
              lambda ctx: write_report(config, inputs, ctx),
              ("shards", "bert", "elmo", "fill-mask", *comparison.NEEDS)),
    ]  # fmt: skip


# ---------------------------------------------------------------- data and pretraining


def train_tokenizer(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    shutil.rmtree(ctx.directory, ignore_errors=True)
    train_wordpiece(TokenizerTrainConfig(inputs=inputs.train_text, out=str(ctx.directory),
                                         vocab_size=config.vocab_size,
                                         lowercase=config.lowercase))  # fmt: skip
    return {"directory": str(ctx.directory), "inputs": inputs.train_text}


def prepare_shards(inputs: Inputs, ctx: StageContext) -> dict:
    shutil.rmtree(ctx.directory, ignore_errors=True)
    tokenizer, manifests = str(ctx.out / "tokenizer"), {}
    for split, text in (("train", inputs.train_text), ("valid", inputs.valid_text)):
        prepare_corpus(PrepareConfig(inputs=text, tokenizer=tokenizer,
                                     out=str(ctx.directory / split)))  # fmt: skip
        manifest = json.loads((ctx.directory / split / "manifest.json").read_text())
        manifests[split] = {k: manifest[k] for k in ("documents", "sentences", "tokens")}
    return manifests


def _fresh_or_resumed(directory: Path) -> bool:
    """True when an interrupted run left a checkpoint to resume; otherwise start clean."""
    if checkpoints(directory / "checkpoints"):
        print(f"  resuming from {checkpoints(directory / 'checkpoints')[-1]}")
        return True
    shutil.rmtree(directory, ignore_errors=True)
    return False


def pretrain_bert(config: QuickstartConfig, ctx: StageContext) -> dict:
    shards = ctx.out / "shards"
    resume = _fresh_or_resumed(ctx.directory)
    result = pretrain(from_options(PretrainConfig,
        train_data=str(shards / "train"), valid_data=str(shards / "valid"),
        out=str(ctx.directory), model=config.bert_model, objective="mlm+nsp", max_seq_length=128,
        batch_size=32, micro_batch_size=32, eval_instances=512, max_steps=config.max_pretrain_steps,
        time_budget=f"{LOOP_SHARE * ctx.seconds:.1f}", learning_rate=1e-3, warmup_ratio=0.06,
        log_every=10, eval_every=200, save_every=200, seed=config.seed, resume=resume,
        device=config.device,
    ))  # fmt: skip
    return {**_run_summary(result), "eval": result["eval"]}


def _run_summary(result: dict) -> dict:
    """What the report and the fine-tuning plans read of a pretraining run."""
    seconds = max(result["elapsed_seconds"], 1e-9)
    return {"steps": result["step"], "stopped": result["stopped"],
            "tokens": result["tokens_seen"], "tokens_per_second": result["tokens_seen"] / seconds,
            "train_seconds": result["elapsed_seconds"],
            "train_loss": result["train_loss"]}  # fmt: skip


def pretrain_bilm(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    resume = _fresh_or_resumed(ctx.directory)
    # An adaptive softmax for a big vocabulary: the full softmax's backward was a third of the
    # elmo-small step (0.32 s -> 0.22 s per 32 x 20 tokens on one core).
    vocab = ELMO_PRESETS[config.elmo_model]["vocab_size"]
    cutoffs = [2000] if vocab > 4000 else None
    result = pretrain_elmo(from_options(ElmoPretrainConfig,
        train_data=inputs.train_text, valid_data=inputs.valid_text, out=str(ctx.directory),
        model=config.elmo_model, adaptive_softmax_cutoffs=cutoffs, window=20, batch_size=32,
        micro_batch_size=32, eval_windows=512, max_steps=config.max_pretrain_steps,
        time_budget=f"{LOOP_SHARE * ctx.seconds:.1f}", warmup_ratio=0.05, log_every=10,
        eval_every=100, save_every=100, seed=config.seed, resume=resume, device=config.device,
        threads=config.threads,
    ))  # fmt: skip
    return {**_run_summary(result), "perplexity": result["perplexity"],
            "vocabulary": result["vocabulary"]["size"]}  # fmt: skip


def fill_mask_examples(ctx: StageContext) -> dict:
    model, _, tokenizer = load_pretrained(ctx.out / "bert")
    examples = []
    for text in FILL_MASK_TEXTS:
        (predictions,) = fill_mask(model, tokenizer, text, top_k=5)
        examples.append({"text": text, "predictions": [[t, p] for t, p in predictions]})
    return {"examples": examples}


# ---------------------------------------------------------------- fine-tuning and report


def _row_stage(config: QuickstartConfig, inputs: Inputs, row: str):
    # Every row is sized by the BERT stage's throughput (it ran, or was skipped, before).
    return lambda ctx: comparison.run_row(
        row, ctx.directory, ctx.out, inputs.sst2, ctx.seconds,
        ctx.done["bert"]["tokens_per_second"], bert_model=config.bert_model, seed=config.seed,
        max_epochs=config.max_epochs, max_examples=config.max_train_examples, device=config.device,
    )  # fmt: skip


def write_report(config: QuickstartConfig, inputs: Inputs, ctx: StageContext) -> dict:
    done = ctx.done
    rows = [{"name": row, "model": report.ROWS[row], **done[row]} for row in comparison.NEEDS]
    summary = {"settings": json.loads((ctx.out / "settings.json").read_text()),
               "rows": rows, "majority": comparison.majority_share(inputs.sst2 / "dev.tsv"),
               "dev_size": rows[0]["dev_examples"],
               "pretraining": {"bert": done["bert"], "elmo": done["elmo"]},
               "data": {"shards": done["shards"]}, "fill_mask": done["fill-mask"]["examples"],
               "models": {"bert": config.bert_model, "elmo": config.elmo_model}}  # fmt: skip
    files = report.write_report(ctx.out, summary)
    return {"files": [str(f) for f in files]}
