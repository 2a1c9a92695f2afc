"""Learning curves (--train-sizes) and hyperparameters (defaults by size, lists selected on dev):
the nested seeded subsets with exact indices, QA windows kept with their question, the default
rule table, the chosen candidate = the argmax of medians, a tiny end-to-end run whose summary
numbers are the medians of its seeds' scores, the PNG, and bad input as one line, exit 2."""

import contextlib
import io
import json
import math
import random
import statistics
from dataclasses import dataclass
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from muppets.cli.main import main
from muppets.errors import ConfigError
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.recipes.finetune.curves import parse_train_sizes, subset, subset_indices
from muppets.recipes.finetune.hyperparameters import choose, default_values
from muppets.tokenization.wordpiece import train_wordpiece
from muppets.training.checkpoint import save_pretrained
from muppets.training.options import listed

WORDS = ["the", "a", "movie", "plot", "was", "very", "so", "and"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_subsets_are_nested_seeded_prefixes():
    # np.random.default_rng(0).permutation(10) = [4 6 2 7 3 5 9 0 8 1]
    assert subset_indices(10, 3, 0) == [2, 4, 6]
    assert subset_indices(10, 5, 0) == [2, 3, 4, 6, 7]
    assert subset_indices(10, None, 0) == list(range(10))
    assert subset_indices(10, 3, 1) == sorted(np.random.default_rng(1).permutation(10)[:3])
    for small, large in ((3, 5), (5, 8), (8, None)):
        assert set(subset_indices(10, small, 7)) <= set(subset_indices(10, large, 7))


@dataclass(frozen=True)
class Window:
    example: int
    name: str


class Data(NamedTuple):
    train_examples: list
    train_features: list
    dev: list


def test_subset_keeps_every_window_of_a_kept_question_and_renumbers():
    """QA draws questions: all windows of a drawn question stay, the rest go; dev is whole."""
    windows = [
        Window(0, "q0a"),
        Window(0, "q0b"),
        Window(1, "q1"),
        Window(2, "q2a"),
        Window(2, "q2b"),
        Window(3, "q3"),
    ]
    data = Data(["q0", "q1", "q2", "q3"], windows, ["dev0", "dev1"])
    part = subset(data, [0, 2])
    assert part.train_examples == ["q0", "q2"] and part.dev == ["dev0", "dev1"]
    assert [(w.example, w.name) for w in part.train_features] == [
        (0, "q0a"),
        (0, "q0b"),
        (1, "q2a"),
        (1, "q2b"),
    ]


def test_parse_train_sizes():
    assert parse_train_sizes("300, 100,all") == [100, 300, None]
    assert parse_train_sizes(None) == []
    for bad in ("0", "-5", "1.5", "ten"):
        with pytest.raises(ConfigError) as e:
            parse_train_sizes(f"100,{bad}")
        assert str(e.value) == (
            f"train_sizes must be comma-separated integers > 0 or all, got {bad!r}"
        )
    with pytest.raises(ConfigError, match="must be distinct"):
        parse_train_sizes("100,100")


def test_default_rule_table():
    """Turc et al. 2019 / issue 12: small encoders at higher rates and more epochs."""
    table = {h: default_values(h, False) for h in (128, 256, 257, 512, 768, 1024)}
    assert {h: (v["learning_rate"], v["epochs"]) for h, v in table.items()} == {
        128: (1e-4, 10),
        256: (1e-4, 10),
        257: (5e-5, 4),
        512: (5e-5, 4),
        768: (2e-5, 3),
        1024: (2e-5, 3),
    }
    assert default_values(768, True) == {"learning_rate": 1e-3, "epochs": 3}
    assert default_values(None, False) == {"learning_rate": None, "epochs": 3}


def test_listed_values_and_choose():
    assert listed("5e-5, 1e-4,3e-4", float, "learning_rate") == [5e-5, 1e-4, 3e-4]
    assert listed(2e-5, float, "learning_rate") == [2e-5] and listed(None, int, "x") == []
    with pytest.raises(ConfigError, match="learning_rate must be a float or a comma-separated"):
        listed("1e-4,fast", float, "learning_rate")
    with pytest.raises(ConfigError, match="epochs must be distinct values > 0"):
        listed("0,3", int, "epochs")
    assert choose([0.5, 0.7, 0.6]) == 1
    assert choose([0.7, 0.5, 0.7]) == 0  # a tie goes to the first
    assert choose([math.nan, 0.1]) == 1


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """SST-2 style files (label 1 iff "good") and a tiny random BERT with its tokenizer."""
    root = tmp_path_factory.mktemp("curves")
    rng = random.Random(0)

    def sentence(word):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randrange(len(words) + 1), word)
        return " ".join(words)

    sst = root / "SST-2"
    sst.mkdir()
    for name, n in (("train", 40), ("dev", 12)):
        rows = [f"{sentence('good' if i % 2 else 'bad')}\t{i % 2}" for i in range(n)]
        (sst / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    tokenizer = train_wordpiece(
        [sentence(w) for w in ("good", "bad") for _ in range(20)], vocab_size=60, min_frequency=1
    )
    config = preset_config(
        "bert-tiny",
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    checkpoint = root / "checkpoint"
    save_pretrained(checkpoint, build_pretraining_model(config), config.to_dict())
    tokenizer.save(checkpoint)
    return root, checkpoint


def run(args):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["finetune", *args])
    return code, stdout.getvalue().splitlines(), stderr.getvalue()


def test_curve_with_learning_rates_selected_per_size(workspace, tmp_path):
    root, checkpoint = workspace
    out = tmp_path / "curve"
    code, lines, err = run(
        ["--task", "sst2", "--data", str(root), "--model", str(checkpoint)]
        + ["--out", str(out), "--train-sizes", "8,all,20", "--seeds", "1,2"]
        + ["--learning-rate", "1e-2,1e-5", "--epochs", "2", "--batch-size", "8"]
        + ["--pooling", "cls"]
    )
    assert code == 0, err
    curve = json.loads((out / "summary.json").read_text())
    assert curve["train_examples"] == 40 and curve["train_size_seed"] == 0
    rows = curve["curve"]
    assert [r["train_size"] for r in rows] == [8, 20, "all"]
    assert [r["train_examples"] for r in rows] == [8, 20, 40]
    for row in rows:
        size = json.loads((out / row["dir"] / "summary.json").read_text())
        medians = [c["median"] for c in size["candidates"]]
        for c in size["candidates"]:  # every candidate ran every seed; its median is theirs
            seeds = [
                json.loads(
                    (out / row["dir"] / c["name"] / f"seed-{s}" / "metrics.json").read_text()
                )
                for s in (1, 2)
            ]
            assert [m["train_examples"] for m in seeds] == [row["train_examples"]] * 2
            assert {str(m["seed"]): m["score"] for m in seeds} == c["scores"]
            assert c["median"] == statistics.median(m["score"] for m in seeds)
            assert (c["min"], c["max"]) == (min(c["scores"].values()), max(c["scores"].values()))
        chosen = size["candidates"][medians.index(max(medians))]
        assert size["hyperparameters"] == {
            k: chosen[k] for k in ("learning_rate", "epochs", "batch_size")
        }
        assert row["hyperparameters"] == size["hyperparameters"]
        assert row["scores"] == chosen["scores"] and row["median"] == chosen["median"]
        assert size["best_dir"] == f"{chosen['name']}/seed-{size['best_seed']}"
        best = json.loads((out / row["dir"] / size["best_dir"] / "metrics.json").read_text())
        assert best["score"] == max(chosen["scores"].values())
        assert (out / row["dir"] / "best" / "model.safetensors").is_file()
        assert best["dev"]["dev"]["accuracy"] * 12 == round(best["dev"]["dev"]["accuracy"] * 12)
    assert [c["name"] for c in size["candidates"]] == ["lr-0.01", "lr-1e-05"]
    image = plt.imread(out / "learning_curve.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    table = (out / "learning_curve.txt").read_text().splitlines()
    assert lines[-len(table) :] == table and len(table) == 4
    assert table[1].split()[0] == "8" and table[3].split()[0] == "40"


def test_downstream_curve_and_default_epochs(workspace, tmp_path):
    """The frozen-feature path takes --train-sizes too; one size, one seed, no candidates."""
    root, _ = workspace
    code, lines, err = run(
        ["--task", "sst2", "--data", str(root), "--model", "random-embeddings"]
        + ["--downstream", "bag-of-embeddings", "--out", str(tmp_path / "o")]
        + ["--train-sizes", "10", "--batch-size", "8"]
        + ["--downstream-learning-rate", "1e-2"]
    )
    assert code == 0, err
    assert "defaults for --downstream: epochs 3 (--learning-rate/--epochs to choose)" in lines
    row = json.loads((tmp_path / "o" / "summary.json").read_text())["curve"][0]
    assert row["train_examples"] == 10 and row["classes_seen"] == 2
    assert row["hyperparameters"] == {"learning_rate": None, "epochs": 3, "batch_size": 8}
    metrics = json.loads((tmp_path / "o" / "size-10" / "seed-1" / "metrics.json").read_text())
    assert metrics["train_examples"] == 10


def test_bad_train_sizes_are_one_line_exit_2(workspace, tmp_path):
    root, checkpoint = workspace
    base = ["--task", "sst2", "--data", str(root), "--model", str(checkpoint), "--out"]
    code, _, err = run([*base, str(tmp_path / "a"), "--train-sizes", "10,41"])
    train = root / "SST-2" / "train.tsv"
    assert code == 2 and err.strip().splitlines() == [
        f"muppets: error: train_sizes: 41 is larger than the training set (40 examples in "
        f"{train}); use all for the whole set"
    ]
    code, _, err = run([*base, str(tmp_path / "b"), "--train-sizes", "10,0"])
    assert code == 2 and err.strip().splitlines() == [
        "muppets: error: train_sizes must be comma-separated integers > 0 or all, got '0'"
    ]
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("*.safetensors"))
