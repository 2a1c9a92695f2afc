"""`muppets quickstart` reduced (bert-tiny, elmo-tiny, 4 pretraining steps, 1 epoch on 300
sentences) through the CLI and the same code path as the full run: the numbers of all six rows
(pinned for seed 1), the report's files, the rerun that redoes nothing, a missing marker redone
with what is built on it, the report in headless Chromium; and the stage runner and the
fine-tuning plan on their own.

The reduced run is bound by steps, not time: its budget (10h) is far more than 4 steps and 300
sentences need, so a loaded machine changes its seconds but no number (a 30s budget once cut BERT
to 3 steps)."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from muppets.cli.main import main
from muppets.errors import ConfigError
from muppets.quickstart.comparison import Plan, plan_finetune
from muppets.quickstart.report import ROWS
from muppets.quickstart.run import SHARES, QuickstartConfig
from muppets.quickstart.stages import Stage, run_stages

REDUCED = [
    *("--budget", "10h", "--elmo-model", "elmo-tiny", "--max-pretrain-steps", "4"),
    *("--max-epochs", "1", "--max-train-examples", "300", "--threads", "1"),
]
STAGES = ["tokenizer", "shards", "bert", "elmo", "fill-mask", *ROWS, "report"]
BENCH = Path(__file__).resolve().parents[1] / "bench" / "report_screenshot.py"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quickstart(out: Path, capsys, *more: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["quickstart", "--out", str(out), *REDUCED, *more])
    return status, capsys.readouterr().out


def redone(output: str) -> list[str]:
    """Titles of the stages that ran (not skipped), from their 'done in' lines."""
    return re.findall(r"^\[\d+/\d+\] (.+): done in", output, flags=re.MULTILINE)


def markers(out: Path) -> dict[str, str]:
    return {s: json.loads((out / s / "done.json").read_text())["id"] for s in STAGES}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    assert main(["quickstart", "--out", str(out), *REDUCED]) == 0
    return out


def test_the_reduced_run_fills_all_six_rows_and_writes_the_report(run):
    summary = json.loads((run / "report.json").read_text())
    assert {"settings", "rows", "pretraining", "fill_mask", "majority", "files"} <= set(summary)
    assert [row["name"] for row in summary["rows"]] == list(ROWS)
    for row in summary["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["train_seconds"] > 0
        assert row["epochs"] == 1 and row["train_examples"] == 300
        assert row["dev_examples"] == 872
        assert 0 < row["trained_parameters"] <= row["total_parameters"]
    rows = {row["name"]: row for row in summary["rows"]}
    finetuned = rows["bert-finetuned"]
    # bert-tiny: a frozen encoder trains only Linear(128, 2); fine-tuned and scratch: everything.
    assert rows["bert-frozen"]["trained_parameters"] == 128 * 2 + 2
    assert finetuned["trained_parameters"] == finetuned["total_parameters"]
    assert rows["bert-scratch"]["total_parameters"] == finetuned["total_parameters"]
    assert rows["elmo-bilstm"]["trained_parameters"] < rows["elmo-bilstm"]["total_parameters"]
    assert summary["majority"] == pytest.approx(444 / 872)  # SST-2 dev: 444 positive
    bert, elmo = summary["pretraining"]["bert"], summary["pretraining"]["elmo"]
    assert bert["steps"] == elmo["steps"] == 4 and bert["stopped"] == "max_steps"
    assert 0 < bert["eval"]["mlm_accuracy"] < 1 and elmo["perplexity"] > 1
    assert len(summary["fill_mask"]) == 3
    for example in summary["fill_mask"]:
        probabilities = [p for _, p in example["predictions"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)

    # The table holds a number in every cell after the model name.
    table = (run / "table.txt").read_text().splitlines()
    assert len(table) == 2 + 6
    for line, name in zip(table[2:], ROWS.values(), strict=True):
        assert line.startswith(name)
        numbers = line[len(name) :].split()
        assert len(numbers) == 6 and all(float(n.replace(",", "")) >= 0 for n in numbers)

    page = (run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ["accuracy.png", "pretraining_loss.png"]
    for name in images:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("<tr data-row=") == 6 and "http" not in page.replace("http://www.w3", "")
    assert all((run / stage / "done.json").is_file() for stage in STAGES)


# The reduced run's numbers for seed 1, measured on 7fa8c28 (before the recipes were refactored)
# in three runs of `muppets quickstart --out DIR` + REDUCED. The table (all but "train s") and the
# word-level rows (ELMo, random embeddings: no WordPiece) came out the same every time. The BERT
# side varies a little from run to run because the WordPiece trainer (HF tokenizers) orders ties
# of its initial alphabet differently in every process (another vocab.txt, other ids), so its
# losses are pinned loosely, around the spread seen in five runs (mlm_loss 8.790-8.800, train_loss
# 9.500-9.540, fine-tuning train_loss 0.6832-0.6911); the accuracies were 444/872 every time. With
# one tokenizer held fixed, the BERT rows agree exactly between 7fa8c28 and the refactored code.
# The trainer's order is canonical now (tokenization/wordpiece.py), yet the BERT side still varies
# between processes (mlm_loss 8.751, 8.769, 8.791 in three runs of a09ba3f+): another per-process
# source (not found yet) remains, so the range covers every run seen.
PINNED_TABLE = {  # model -> dev accuracy %, epochs, train sentences, trained, total params
    "BERT fine-tuned": ("50.9", "1", "300", "1,503,362", "1,503,362"),
    "BERT frozen + linear head": ("50.9", "1", "300", "258", "1,503,362"),
    "BERT from scratch": ("50.9", "1", "300", "1,503,362", "1,503,362"),
    "ELMo frozen + biLSTM": ("52.2", "1", "300", "1,269,282", "1,276,290"),
    "random embeddings + biLSTM": ("49.5", "1", "300", "1,236,510", "1,236,510"),
    "bag of embeddings": ("55.6", "1", "300", "93,302", "93,302"),
}
PINNED_RIGHT = {  # row -> dev sentences right, of 872
    "bert-finetuned": 444,
    "bert-frozen": 444,
    "bert-scratch": 444,
    "elmo-bilstm": 455,
    "random-bilstm": 432,
    "bag-of-embeddings": 485,
}
PINNED_WORD_LEVEL_LOSS = {  # row -> fine-tuning train_loss (metrics.json), the same every run
    "elmo-bilstm": 0.7366258502006531,
    "random-bilstm": 0.7397090196609497,
    "bag-of-embeddings": 0.6695063710212708,
}


def test_the_reduced_run_gives_the_pinned_numbers(run):
    summary = json.loads((run / "report.json").read_text())
    lines = (run / "table.txt").read_text().splitlines()[2:]
    table = {}
    for line in lines:
        name = next(n for n in PINNED_TABLE if line.startswith(n))
        accuracy, _seconds, *rest = line[len(name) :].split()  # seconds: the machine's, not pinned
        table[name] = (accuracy, *rest)
    assert table == PINNED_TABLE
    rows = {row["name"]: row for row in summary["rows"]}
    assert {name: round(872 * row["accuracy"]) for name, row in rows.items()} == PINNED_RIGHT
    assert all(row["steps"] == 10 and row["best_epoch"] == 1.0 for row in rows.values())
    losses = {
        name: json.loads((Path(row["run"]) / "metrics.json").read_text())["train_loss"]
        for name, row in rows.items()
    }
    for name, loss in PINNED_WORD_LEVEL_LOSS.items():
        assert losses[name] == pytest.approx(loss, rel=1e-4), name
    for name in ("bert-finetuned", "bert-frozen", "bert-scratch"):
        assert losses[name] == pytest.approx(0.687, abs=0.01), name

    elmo = summary["pretraining"]["elmo"]
    assert (elmo["steps"], elmo["tokens"], elmo["vocabulary"]) == (4, 2560, 50)
    assert elmo["train_loss"] == pytest.approx(3.8779494762420654, rel=1e-4)
    assert elmo["perplexity"] == pytest.approx(48.14596495868245, rel=1e-4)
    bert = summary["pretraining"]["bert"]
    assert bert["eval"]["mlm_loss"] == pytest.approx(8.775, abs=0.05)
    assert bert["train_loss"] == pytest.approx(9.52, abs=0.06)
    shards = {
        split: (m["documents"], m["sentences"]) for split, m in summary["data"]["shards"].items()
    }
    assert shards == {"train": (1023, 14614), "valid": (50, 1509)}


def test_a_rerun_redoes_no_stage(run, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != "quickstart.toml"}
    status, output = quickstart(run, capsys)
    assert status == 0
    assert redone(output) == [] and output.count("finished in an earlier run, skipped") == 12
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != "quickstart.toml"}
    assert after == before
    assert "BERT frozen + linear head" in output  # the table is printed again


def test_a_stage_without_its_marker_is_redone_with_the_stages_built_on_it(run, tmp_path, capsys):
    out = tmp_path / "qs"
    shutil.copytree(run, out)
    ids = markers(out)
    (out / "elmo" / "done.json").unlink()  # as if Ctrl-C hit the ELMo stage after its checkpoint
    status, output = quickstart(out, capsys)
    assert status == 0
    elmo_stages = ["pretrain ELMo (elmo-tiny, biLM)", "SST-2: ELMo frozen + biLSTM"]
    assert redone(output) == [*elmo_stages, "write the report"]
    assert "resuming from" in output  # the pretraining stage continued from its checkpoint
    now = markers(out)
    assert [s for s in STAGES if now[s] != ids[s]] == ["elmo", "elmo-bilstm", "report"]

    (out / "bag-of-embeddings" / "done.json").unlink()  # a leaf: only it and the report
    _, output = quickstart(out, capsys)
    assert redone(output) == ["SST-2: bag of embeddings", "write the report"]


def test_other_settings_in_the_same_out_are_refused(run, capsys):
    capsys.readouterr()
    argv = ["quickstart", "--out", str(run), *REDUCED[2:], "--budget", "9h"]
    assert main(argv) == 2
    assert "other settings (budget '10h' -> '9h')" in capsys.readouterr().err


def test_the_default_budget_is_resolved_into_the_config_and_parsed_once():
    assert (QuickstartConfig().budget, QuickstartConfig().budget_seconds) == ("12m", 720.0)
    config = QuickstartConfig(data_dir="data", budget=None)
    assert (config.budget, config.budget_seconds) == ("1h", 3600.0)
    assert QuickstartConfig(budget="1h30m").budget_seconds == 5400.0
    with pytest.raises(ConfigError, match="not a duration"):
        QuickstartConfig(budget="soon")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (Debian package)")
def test_the_report_renders_in_headless_chromium(run):
    spec = importlib.util.spec_from_file_location("report_screenshot", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    found = bench.check_report(run / "report.html", shutil.which("chromium"))
    assert found["images"] == (2, 2) and found["rows"] == 6 and found["bad_cells"] == []
    assert found["height"] > 800


def test_the_stage_runner_skips_finished_stages_and_redoes_stale_ones(tmp_path, capsys):
    calls, fail = [], set()

    def stage(name, needs=()):
        def run(ctx):
            calls.append(name)
            if name in fail:
                raise KeyboardInterrupt
            (ctx.directory / "output").parent.mkdir(parents=True, exist_ok=True)
            (ctx.directory / "output").write_text(name)
            return {"seen": sorted(ctx.done), "seconds": ctx.seconds}

        return Stage(name, f"stage {name}", 0.25, run, needs)

    stages = [stage("a"), stage("b", ("a",)), stage("c"), stage("d", ("b", "c"))]
    records = run_stages(stages, tmp_path, 100.0)
    assert calls == ["a", "b", "c", "d"] and records["d"]["results"]["seen"] == ["a", "b", "c"]
    assert records["a"]["results"]["seconds"] == 25.0
    line = "[1/4] stage a (budget 0m25s) | elapsed 0m00s, about 1m40s to go, done by "
    assert line in capsys.readouterr().out

    calls.clear()
    run_stages(stages, tmp_path, 100.0)
    assert calls == []
    (tmp_path / "a" / "done.json").unlink()
    run_stages(stages, tmp_path, 100.0)
    assert calls == ["a", "b", "d"]  # c does not need a

    calls.clear()
    fail.add("c")
    (tmp_path / "c" / "done.json").unlink()
    with pytest.raises(KeyboardInterrupt):
        run_stages(stages, tmp_path, 100.0)
    assert "[3/4] stage c: interrupted; run the same command again" in capsys.readouterr().out
    fail.clear()
    calls.clear()
    run_stages(stages, tmp_path, 100.0)
    assert calls == ["c", "d"]

    with pytest.raises(ValueError, match="needs"):
        run_stages([stage("x", ("y",)), stage("y")], tmp_path, 1.0)


def test_the_finetuning_plan_fits_the_budget():
    # 1,000 examples x 10 tokens at 1,000 tokens/s, train cost 2, dev cost 0.5: 20.5 s an epoch.
    plan = plan_finetune(100.0, 1000, 10.0, 1000.0, 1000.0, (2.0, 0.5, 0.0), max_epochs=10)
    assert plan == Plan(4, 1000, 1000, pytest.approx(82.0))
    assert plan_finetune(1000.0, 1000, 10.0, 1000.0, 1000.0, (2.0, 0.5, 0.0), 3).epochs == 3
    # Not one epoch: (10 - 0.5 s of dev) / 0.02 s per example = 475 examples.
    plan = plan_finetune(10.0, 1000, 10.0, 1000.0, 1000.0, (2.0, 0.5, 0.0), max_epochs=10)
    assert (plan.epochs, plan.train_examples) == (1, 475)
    assert plan.estimated_seconds == pytest.approx(10.0)
    assert plan_finetune(1.0, 1000, 10.0, 1000.0, 1000.0, (2.0, 0.5, 0.0), 10).train_examples == 256
    # Featurized once (cost 4): (1,000 x 10 + 1,000) x 4 / 1,000 = 44 s before the first epoch.
    plan = plan_finetune(100.0, 1000, 10.0, 1000.0, 1000.0, (2.0, 0.5, 4.0), max_epochs=10)
    assert plan.epochs == 2 and plan.estimated_seconds == pytest.approx(44.0 + 2 * 20.5)
    assert plan_finetune(1e6, 1000, 10.0, 0.0, 1.0, (1.0, 0.0, 0.0), 1, 300).train_examples == 300
    assert sum(SHARES.values()) == pytest.approx(1.0)
