"""The training loop: exact accumulation, bitwise resume, NaN handling, metrics and plots.

The toy model, objective and batch source here follow the loop's contracts (muppets.training.loop)
and are shared with test_checkpoint.py and test_distributed.py.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from muppets.errors import ConfigError, InputError, TrainingError
from muppets.training import checkpoint as ckpt
from muppets.training.logging import read_metrics
from muppets.training.loop import TrainConfig, train
from muppets.training.optim import lr_factor

VOCAB, HIDDEN, SEQ = 11, 8, 6
CONFIG = {"vocab_size": VOCAB, "hidden_size": HIDDEN}


class ToyMLM(nn.Module):
    """Embedding + mean-pooled context, LayerNorm, dropout; tied MLM decoder; 2-way head on [0]."""

    def __init__(self, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(HIDDEN, VOCAB)
        self.decoder.weight = self.embeddings.weight  # tied, as in BERT
        self.nsp = nn.Linear(HIDDEN, 2)

    def forward(self, input_ids, attention_mask):
        h = self.embeddings(input_ids)  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        context = (h * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)  # (B, 1, H)
        h = self.dropout(self.norm(h + context))
        return self.decoder(h), self.nsp(h[:, 0])  # (B, T, V), (B, 2)


class ToyObjective:
    """MLM + NSP, loss sums per component, following the objective contract."""

    def __init__(self, nan_at_call: int | None = None):
        self.calls, self.nan_at_call = 0, nan_at_call

    def __call__(self, model, batch):
        self.calls += 1
        mlm, nsp = model(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"].flatten()
        sums = {
            "mlm": F.cross_entropy(mlm.flatten(0, 1), labels, ignore_index=-100, reduction="sum"),
            "nsp": F.cross_entropy(nsp, batch["next_sentence_label"], reduction="sum"),
        }
        if self.calls == self.nan_at_call:
            sums["mlm"] = sums["mlm"] * math.nan
        return sums

    def count_targets(self, batch):
        return {"mlm": int((batch["labels"] != -100).sum()), "nsp": len(batch["labels"])}

    def metrics(self, model, batch):
        mlm, nsp = model(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"].flatten()
        at = labels != -100
        mlm, nsp_labels = mlm.flatten(0, 1), batch["next_sentence_label"]
        return {
            "mlm_loss_sum": float(F.cross_entropy(mlm[at], labels[at], reduction="sum")),
            "mlm_correct": int((mlm[at].argmax(-1) == labels[at]).sum()),
            "mlm_count": int(at.sum()),
            "nsp_loss_sum": float(
                F.cross_entropy(nsp, batch["next_sentence_label"], reduction="sum")
            ),
            "nsp_correct": int((nsp.argmax(-1) == nsp_labels).sum()),
            "nsp_count": len(nsp),
        }


def make_batch(index: int, size: int = 4) -> dict:
    """Batch number `index`: random ids, 1-2 padding tokens, a random number of masked targets."""
    g = torch.Generator().manual_seed(1000 + index)
    input_ids = torch.randint(1, VOCAB, (size, SEQ), generator=g)
    lengths = torch.randint(SEQ - 2, SEQ + 1, (size,), generator=g)
    attention_mask = (torch.arange(SEQ) < lengths[:, None]).long()
    masked = (torch.rand(size, SEQ, generator=g) < 0.35) & attention_mask.bool()
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    input_ids = torch.where(masked, torch.zeros_like(input_ids), input_ids) * attention_mask
    nsp = torch.randint(0, 2, (size,), generator=g)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "next_sentence_label": nsp,
    }


class ToyBatches:
    """Batch source: micro-batch i is `make_batch(i)`, or rows `rows` of it (a rank's share).

    Records every index it hands out in `seen`; raises RuntimeError at position `fail_at`
    (a preempted job). `batches` overrides the generated ones with a fixed list.
    """

    def __init__(self, rows=None, fail_at=None, batches=None):
        self.position, self.seen = 0, []
        self.rows, self.fail_at, self.batches = rows, fail_at, batches

    def __iter__(self):
        return self

    def __next__(self):
        if self.position == self.fail_at:
            raise RuntimeError("preempted")
        if self.batches is not None and self.position >= len(self.batches):
            raise StopIteration
        i = self.position
        self.position += 1
        self.seen.append(i)
        batch = self.batches[i] if self.batches is not None else make_batch(i)
        return batch if self.rows is None else {k: v[self.rows] for k, v in batch.items()}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second OpenMP thread only adds spin-waiting (100x slower on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> TrainConfig:
    base = dict(
        max_steps=6, learning_rate=1e-2, warmup_steps=2, log_every=1, eval_every=0, save_every=0
    )
    return TrainConfig(**{**base, **overrides})


def eval_batches():
    return [make_batch(100), make_batch(101, size=3)]


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_steps", 0),
        ("schedule", "step"),
        ("gradient_accumulation_steps", 0),
        ("max_grad_norm", 0.0),
        ("warmup_ratio", 1.5),
        ("time_budget_seconds", -1.0),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        config(**{field: value})


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(max_steps=100)  # default warmup_steps=10_000


# ----------------------------------------------------------------------------- exactness


def test_k_micro_batches_equal_one_batch_of_k_times_b(tmp_path):
    micro = [make_batch(i, size=2) for i in range(6)]  # 2 steps x 3 micro-batches of 2
    counts = [int((b["labels"] != -100).sum()) for b in micro]
    assert len(set(counts)) > 1  # the micro-batches carry different numbers of targets
    big = [{k: torch.cat([b[k] for b in micro[s : s + 3]]) for k in micro[0]} for s in (0, 3)]
    # adam_epsilon=1: Adam's update then depends on the gradient's scale, not just its sign.
    cfg = dict(max_steps=2, warmup_steps=0, adam_epsilon=1.0, weight_decay=0.1, max_grad_norm=None)
    small_model, big_model = ToyMLM(), ToyMLM()
    train(
        small_model,
        ToyObjective(),
        ToyBatches(batches=micro),
        config(gradient_accumulation_steps=3, **cfg),
        tmp_path / "k3",
        config_dict=CONFIG,
    )
    out = train(
        big_model,
        ToyObjective(),
        ToyBatches(batches=big),
        config(**cfg),
        tmp_path / "k1",
        config_dict=CONFIG,
    )
    for (name, a), b in zip(small_model.named_parameters(), big_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
        assert not torch.equal(a, ToyMLM().state_dict()[name])  # it did train
    # The logged loss is the mean over the whole batch: per-target CE + per-pair CE.
    first = read_metrics(tmp_path / "k3" / "metrics.jsonl")[0]
    mlm, nsp = ToyMLM()(big[0]["input_ids"], big[0]["attention_mask"])
    labels = big[0]["labels"].flatten()
    expected_mlm = F.cross_entropy(mlm.flatten(0, 1), labels, ignore_index=-100).item()
    assert first["loss_mlm"] == pytest.approx(expected_mlm, abs=1e-6)
    expected_nsp = F.cross_entropy(nsp, big[0]["next_sentence_label"]).item()
    assert first["loss"] == pytest.approx(expected_mlm + expected_nsp, abs=1e-6)
    assert out["step"] == 2 and out["stopped"] == "max_steps"


# ----------------------------------------------------------------------------- resume


def test_resume_is_bitwise_and_replays_no_batch(tmp_path):
    cfg = config(gradient_accumulation_steps=2, save_every=3)
    straight, source = ToyMLM(dropout=0.1), ToyBatches()
    train(straight, ToyObjective(), source, cfg, tmp_path / "a", config_dict=CONFIG)

    first = ToyBatches(fail_at=6)  # preempted when step 4 asks for its first micro-batch
    with pytest.raises(RuntimeError, match="preempted"):
        train(ToyMLM(dropout=0.1), ToyObjective(), first, cfg, tmp_path / "b", config_dict=CONFIG)
    resumed, second = ToyMLM(dropout=0.1, seed=7), ToyBatches()  # a new process: fresh objects
    out = train(
        resumed, ToyObjective(), second, cfg, tmp_path / "b", config_dict=CONFIG, resume=True
    )

    assert out["step"] == 6
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
    a_dir, b_dir = (tmp_path / d / "checkpoints" / "step-00000006" for d in "ab")
    for file in ("model.safetensors", "optimizer.safetensors"):
        a, b = load_file(a_dir / file), load_file(b_dir / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    assert source.seen == first.seen + second.seen == list(range(12))
    # metrics.jsonl: the resumed run's losses are the straight run's, step for step.
    losses = {
        d: [
            (r["step"], r["loss"])
            for r in read_metrics(tmp_path / d / "metrics.jsonl")
            if r["event"] == "train"
        ]
        for d in "ab"
    }
    assert losses["a"] == losses["b"] and len(losses["a"]) == 6


def train_records(out_dir) -> list[dict]:
    """The train records of metrics.jsonl without the fields that measure wall time."""
    timed = ("tokens_per_second", "elapsed_seconds")
    records = read_metrics(out_dir / "metrics.jsonl")
    return [
        {k: v for k, v in r.items() if k not in timed} for r in records if r["event"] == "train"
    ]


def test_a_resume_mid_logging_window_logs_what_an_uninterrupted_run_logs(tmp_path):
    cfg = config(max_steps=8, log_every=4, save_every=3)  # windows 1-4, 5-8; checkpoint at 6
    a, b = tmp_path / "a", tmp_path / "b"
    train(ToyMLM(dropout=0.1), ToyObjective(), ToyBatches(), cfg, a, config_dict=CONFIG)
    with pytest.raises(RuntimeError, match="preempted"):
        train(
            ToyMLM(dropout=0.1), ToyObjective(), ToyBatches(fail_at=7), cfg, b, config_dict=CONFIG
        )
    state = json.loads((b / "checkpoints/step-00000006/trainer_state.json").read_text())
    assert state["log_window"]["steps"] == 2 and len(state["log_window"]["loss_sums"]) == 2
    resumed = ToyMLM(dropout=0.1, seed=7)
    train(resumed, ToyObjective(), ToyBatches(), cfg, b, config_dict=CONFIG, resume=True)
    # Step 8's mean is over steps 5-8 (two before the checkpoint, two after), bit for bit.
    assert [r["step"] for r in train_records(a)] == [4, 8]
    assert train_records(a) == train_records(b)


def test_resume_refuses_a_changed_model_config(tmp_path):
    train(ToyMLM(), ToyObjective(), ToyBatches(), config(max_steps=2), tmp_path, config_dict=CONFIG)
    with pytest.raises(InputError, match="hidden_size") as error:
        train(
            ToyMLM(),
            ToyObjective(),
            ToyBatches(),
            config(max_steps=4),
            tmp_path,
            config_dict={**CONFIG, "hidden_size": 16},
            resume=True,
        )
    assert error.value.path.endswith("config.json")


def test_a_new_run_will_not_overwrite_checkpoints_and_resume_needs_one(tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        train(
            ToyMLM(),
            ToyObjective(),
            ToyBatches(),
            config(),
            tmp_path,
            config_dict=CONFIG,
            resume=True,
        )
    train(ToyMLM(), ToyObjective(), ToyBatches(), config(max_steps=2), tmp_path, config_dict=CONFIG)
    with pytest.raises(InputError, match="earlier run"):
        train(ToyMLM(), ToyObjective(), ToyBatches(), config(), tmp_path, config_dict=CONFIG)


# ----------------------------------------------------------------------------- NaN


def test_nan_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model = ToyMLM()
    with pytest.raises(TrainingError, match="step 3") as error:
        train(
            model,
            ToyObjective(nan_at_call=3),
            ToyBatches(),
            config(save_every=2),
            tmp_path,
            config_dict=CONFIG,
        )
    saved = ckpt.checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in saved] == ["step-00000002"]
    # its weights gave the NaN (the first loss computed on them): not one to restart from
    assert "no checkpoint in" in str(error.value) and "had a sane loss" in str(error.value)
    # The NaN never reached the weights, and the checkpoint holds the step-2 values.
    reloaded = ToyMLM(seed=5)
    ckpt.load_weights(reloaded, saved[0])
    for (name, a), b in zip(model.named_parameters(), reloaded.parameters(), strict=True):
        assert torch.isfinite(a).all() and torch.equal(a, b), name


# ----------------------------------------------------------------------------- metrics


def test_metrics_jsonl_records_and_loss_plot(tmp_path):
    model, source = ToyMLM(), ToyBatches()
    cfg = config(log_every=2, eval_every=3, schedule="linear", warmup_steps=2)
    out = train(
        model,
        ToyObjective(),
        source,
        cfg,
        tmp_path,
        config_dict=CONFIG,
        eval_batches_fn=eval_batches,
    )
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["event"], r["step"]) for r in records] == [
        ("train", 2),
        ("eval", 3),
        ("train", 4),
        ("train", 6),
        ("eval", 6),
    ]
    train_records = [r for r in records if r["event"] == "train"]
    for r in train_records:  # lr of the step just taken (0-based index step - 1)
        assert r["lr"] == pytest.approx(1e-2 * lr_factor(r["step"] - 1, "linear", 2, 6))
        assert {"loss_mlm", "loss_nsp", "grad_norm", "tokens_per_second"} <= r.keys()
        assert r["loss"] == pytest.approx(r["loss_mlm"] + r["loss_nsp"])
    tokens = sum(int(make_batch(i)["attention_mask"].sum()) for i in range(6))
    assert train_records[-1]["tokens"] == tokens == out["tokens_seen"]
    # The final eval equals a direct computation with the trained model over the eval batches.
    model.eval()
    with torch.no_grad():
        sums = [ToyObjective().metrics(model, b) for b in eval_batches()]
    total = {k: sum(s[k] for s in sums) for k in sums[0]}
    final = records[-1]
    assert final["mlm_loss"] == pytest.approx(total["mlm_loss_sum"] / total["mlm_count"])
    assert final["mlm_accuracy"] == pytest.approx(total["mlm_correct"] / total["mlm_count"])
    assert final["nsp_accuracy"] == pytest.approx(total["nsp_correct"] / 7)
    assert final["loss"] == pytest.approx(final["mlm_loss"] + final["nsp_loss"])
    assert out["eval"] == {k: v for k, v in final.items() if k not in ("event", "step")}
    png = (tmp_path / "loss.png").read_bytes()
    assert len(png) > 1000 and png[:8] == b"\x89PNG\r\n\x1a\n"
    state = json.loads((tmp_path / "checkpoints/step-00000006/trainer_state.json").read_text())
    assert state["step"] == 6 and state["tokens_seen"] == tokens
    assert state["ranks"][0]["data"] == {"position": 6}
