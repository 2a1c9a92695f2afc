"""pretrain-lm (Transformer-XL on prepared shards, memories carried) and evaluate-lm: resumed ==
uninterrupted bitwise (memories saved with the data position), k micro-batches == one batch,
`pretrain --model transfo-xl-*` routed here, the evaluation table, bad input in one line."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.data.lm_streams import OrderedSegments
from muppets.data.wikitext import read_wikitext
from muppets.recipes.pretrain_lm import LMPretrainConfig, pretrain_lm
from muppets.tasks.causal_lm import SegmentMemory
from muppets.training.options import from_options
from muppets.training.pretrained import load_transfo_xl

LINES = [" = Cats = ", " the cat sat on the mat . ", " a dog ran in the park . "] * 6


def run(shards, out, **overrides) -> Path:
    values = dict(
        train_data=str(shards / "train"),
        out=str(out),
        model="transfo-xl-tiny",
        tgt_len=8,
        mem_len=8,
        batch_size=4,
        micro_batch_size=2,
        learning_rate=1e-3,
        schedule="constant",
        log_every=1,
        eval_every=0,
        save_every=0,
        threads=1,
    )
    values.update(overrides)
    pretrain_lm(from_options(LMPretrainConfig, **values))
    return Path(out)


def weights(out: Path, step: int) -> dict:
    return load_file(out / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


def test_resumed_run_equals_uninterrupted_with_its_memories(tiny_shards, tmp_path):
    options = dict(max_steps=6, save_every=3, dropout=0.1)  # dropout: RNG restored too
    whole = run(tiny_shards, tmp_path / "whole", **options)
    run(tiny_shards, tmp_path / "parts", **{**options, "max_steps": 3})
    parts = run(tiny_shards, tmp_path / "parts", **{**options, "resume": True})
    a, b = weights(whole, 6), weights(parts, 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the memories saved at step 3: one per micro-batch (2 rows each), every layer, mem_len 8
    state = json.loads((parts / "checkpoints/step-00000003/trainer_state.json").read_text())
    memory = SegmentMemory()
    memory.load_state_dict(state["ranks"][0]["data"]["memory"])
    assert sorted(memory.mems) == [("train", 0), ("train", 1)]
    assert [tuple(m.shape) for m in memory.mems[("train", 1)]] == [(2, 8, 128)] * 2


def test_micro_batches_equal_one_batch(tiny_shards, tmp_path):
    # each micro-batch is a share of the rows with its own memories: the same sums as all rows
    options = dict(max_steps=3, dropout=0.0)
    one = run(tiny_shards, tmp_path / "one", micro_batch_size=4, **options)
    two = run(tiny_shards, tmp_path / "two", micro_batch_size=2, **options)
    a, b = weights(one, 3), weights(two, 3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=0)


def test_cli_pretrain_routes_and_evaluate_lm_reports_every_memory(tiny_shards, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--model", "transfo-xl-tiny", "--objective", "clm"]
    args += ["--train-data", str(tiny_shards / "train"), "--valid-data", str(tiny_shards / "valid")]
    args += ["--out", str(out), "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "4"]
    args += ["--tgt-len", "8", "--eval-segments", "2", "--threads", "1"]
    assert main(args) == 0
    assert (out / "pretrain-lm.toml").is_file()
    result = json.loads((out / "result.json").read_text())
    assert result["step"] == 2 and result["perplexity"] > 1
    text = tmp_path / "wiki.valid.tokens"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    evaluated = tmp_path / "eval"
    args = ["evaluate-lm", "--model", str(out), "--data", str(text), "--tgt-len", "4"]
    assert main([*args, "--batch-size", "2", "--out", str(evaluated), "--threads", "1"]) == 0
    assert "| wiki.valid.tokens | 4 | 16 | 0 |" in capsys.readouterr().out
    rows = json.loads((evaluated / "result.json").read_text())["rows"]
    assert [r["mem_len"] for r in rows] == [0, 4, 16]
    _, _, tokenizer = load_transfo_xl(out)
    read = read_wikitext(text, tokenizer, tokenizer.sep_id)
    predicted = OrderedSegments(read.stream, 2, 4).predicted()
    assert all(r["pieces"] == predicted.sum() for r in rows)
    assert all(r["words"] == read.word_start[predicted].sum() for r in rows)
    # memory changes the numbers (the same pieces, other contexts)
    assert len({round(r["ppl_piece"], 6) for r in rows}) == 3


@pytest.mark.parametrize(
    "argv, says",
    [
        (["evaluate-lm", "--model", "x", "--mem-len", "0", "-1"], "mem_len must be >= 0"),
        (["evaluate-lm", "--model", "x", "--clamp-len", "-1"], "clamp_len must be >= 0"),
        (
            ["pretrain", "--model", "transfo-xl-tiny", "--train-data", "x", "--mem-len", "-2"],
            "mem_len",
        ),
        (["pretrain-lm", "--train-data", "x", "--clamp-len", "-1"], "clamp_len must be >= 0"),
        (
            ["pretrain-lm", "--train-data", "x", "--objective", "mlm"],
            "objective must be one of clm",
        ),
        (["pretrain-lm", "--train-data", "x", "--model", "bert-tiny"], "unknown model 'bert-tiny'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_error, tmp_path, argv, says):
    assert says in cli_error([*argv, "--out", str(tmp_path / "out")])


def test_a_stream_too_short_for_the_batch_is_one_line(cli_error, tiny_shards, tmp_path):
    args = ["pretrain-lm", "--train-data", str(tiny_shards / "train"), "--batch-size", "1000000"]
    args += ["--micro-batch-size", "1000000", "--out", str(tmp_path / "out")]
    assert "too few for batch_size 1000000" in cli_error(args)


def test_another_models_checkpoint_is_named_in_one_line(cli_error, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    line = cli_error(["evaluate-lm", "--model", str(bert), "--out", str(tmp_path / "out")])
    assert "config.json" in line and "not a Transformer-XL checkpoint (model_type 'bert')" in line
