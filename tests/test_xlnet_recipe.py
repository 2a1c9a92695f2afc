"""XLNet pretraining through the commands (permutation LM, memories carried and saved): resumed ==
uninterrupted bitwise, the loss is transformers' XLNetLMHeadModel's on the same batches and
memories, held-out metrics, bi_data, bad options in one line (fine-tuning: test_xlnet_finetune)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.data.lm_streams import ShardStream
from muppets.data.shards import ShardedCorpus
from muppets.data.xlnet_instances import XLNetBatches
from muppets.models.hf_xlnet import config_to_hf, state_dict_to_hf
from muppets.models.xlnet import XLNetLMHeadModel
from muppets.recipes.pretrain_xlnet import XLNetPretrainConfig, pretrain_xlnet
from muppets.tasks.causal_lm import RowChunks, SegmentMemory
from muppets.tasks.permutation_lm import PermutationLMObjective, XLNetPLMLoss
from muppets.tokenization.families import load_any_tokenizer
from muppets.training.options import from_options

pytestmark = pytest.mark.usefixtures("one_thread")
SIZES = dict(seq_len=32, reuse_len=16, mem_len=24, perm_size=8, num_predict=6, max_gram=3)


def run(shards, out, **overrides) -> Path:
    values = dict(
        train_data=str(shards / "train"),
        out=str(out),
        model="xlnet-tiny",
        batch_size=4,
        micro_batch_size=2,
        learning_rate=1e-3,
        schedule="constant",
        log_every=1,
        eval_every=0,
        save_every=0,
        threads=1,
        **SIZES,
    )
    values.update(overrides)
    pretrain_xlnet(from_options(XLNetPretrainConfig, **values))
    return Path(out)


def weights(out: Path, step: int) -> dict:
    return load_file(out / "checkpoints" / f"step-{step:08d}" / "model.safetensors")


def test_resumed_pretraining_equals_uninterrupted_with_its_memories(tiny_shards, tmp_path):
    options = dict(max_steps=4, save_every=2, dropout=0.1)  # dropout: RNG restored too
    whole = run(tiny_shards, tmp_path / "whole", **options)
    run(tiny_shards, tmp_path / "parts", **{**options, "max_steps": 2})
    parts = run(tiny_shards, tmp_path / "parts", **{**options, "resume": True})
    a, b = weights(whole, 4), weights(parts, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "mlm_head.bias" in a and "encoder.mask_emb" in a  # XLNetLMHeadModel's names
    # saved at step 2: per micro-batch (2 rows), every layer, 2 x reuse_len = 32 cut to mem_len
    state = json.loads((parts / "checkpoints/step-00000002/trainer_state.json").read_text())
    assert state["ranks"][0]["data"]["step"] == 2
    memory = SegmentMemory()
    memory.load_state_dict(state["ranks"][0]["data"]["memory"])
    assert sorted(memory.mems) == [("train", 0), ("train", 1)]
    assert [tuple(m.shape) for m in memory.mems[("train", 1)]] == [(2, 24, 128)] * 2


def test_loss_equals_transformers_with_memories(tiny_shards):
    """Two steps of the objective on the stream's batches (the second with the first's
    memories) against XLNetLMHeadModel(labels at target_mapping, mems) on the same tensors."""
    import transformers

    tokenizer = load_any_tokenizer(tiny_shards / "train")
    config = from_options(XLNetPretrainConfig, train_data=str(tiny_shards / "train"), **SIZES)
    model_config = config.model_config(tokenizer)
    ours = XLNetLMHeadModel(model_config).eval()
    corpus = ShardedCorpus(tiny_shards / "train")
    source = XLNetBatches(
        ShardStream(corpus, eos_id=tokenizer.sep_id),
        config.permutation_config(),
        2,
        sep_id=tokenizer.sep_id,
        cls_id=tokenizer.cls_id,
        pad_id=tokenizer.pad_id,
        continuation=tokenizer.continuation_mask(),
    )
    memory = SegmentMemory()
    batches = RowChunks(source, 1, memory, rows=2)
    hf_config = transformers.XLNetConfig(**config_to_hf(model_config))
    theirs = transformers.XLNetLMHeadModel(hf_config).eval()
    loaded = theirs.load_state_dict(state_dict_to_hf(ours.state_dict(), model_config), strict=False)
    assert loaded.missing_keys == ["lm_loss.weight"] and not loaded.unexpected_keys  # tied
    wrapped, objective = XLNetPLMLoss(ours, memory).eval(), PermutationLMObjective()
    mems = None
    with torch.no_grad():
        for _ in range(2):
            batch = next(batches)
            got = objective.metrics(wrapped, batch)
            out = theirs(
                input_ids=batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"].float(),
                perm_mask=batch["perm_mask"],
                target_mapping=batch["target_mapping"],
                labels=batch["labels"],
                mems=mems,
                use_mems=True,
            )
            mems = out.mems
            assert got["plm_count"] == int(batch["target_mask"].sum()) > 0
            expected = float(out.loss)
            assert abs(got["plm_loss_sum"] / got["plm_count"] - expected) < 1e-5
    assert batch["new_stream"].item() is False and len(memory.mems[("eval", 0)]) == 2


def test_cli_pretrain_routes_to_plm_and_reports_held_out(tiny_shards, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--model", "xlnet-tiny", "--objective", "plm"]
    args += ["--train-data", str(tiny_shards / "train"), "--valid-data", str(tiny_shards / "valid")]
    args += ["--out", str(out), "--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2"]
    args += ["--seq-len", "32", "--reuse-len", "16", "--mem-len", "24", "--perm-size", "8"]
    args += ["--eval-steps", "2", "--threads", "1"]
    assert main(args) == 0
    assert (out / "pretrain-xlnet.toml").is_file()
    scores = json.loads((out / "result.json").read_text())["eval"]
    assert 0.0 <= scores["plm_accuracy"] <= 1.0
    # a fresh 500-piece model: held-out loss near log(500) = 6.2
    assert 5.0 < scores["plm_loss"] < 7.5


def test_bad_permutation_options_are_one_line(tiny_shards, cli_error):
    args = ["pretrain", "--model", "xlnet-tiny", "--train-data", str(tiny_shards / "train")]
    message = cli_error([*args, "--seq-len", "32", "--reuse-len", "16", "--perm-size", "5"])
    assert "perm_size (5) must divide reuse_len (16)" in message
    assert "mem_len" in cli_error([*args, "--mem-len", "-1"])


def test_bi_data_runs_forward_and_backward_rows(tiny_shards, tmp_path, cli_error, capsys):
    out = run(tiny_shards, tmp_path / "bi", max_steps=2, micro_batch_size=4, bi_data=True)
    assert json.loads((out / "result.json").read_text())["step"] == 2
    saved = out / "checkpoints" / "step-00000002" / "config.json"
    assert json.loads(saved.read_text())["bi_data"] is True
    capsys.readouterr()
    args = ["pretrain", "--model", "xlnet-tiny", "--train-data", str(tiny_shards / "train")]
    args += ["--bi-data", "--batch-size", "4", "--micro-batch-size", "2"]
    message = cli_error([*args, "--out", str(tmp_path / "x")])
    assert "bi_data needs micro_batch_size" in message


def test_micro_batches_equal_one_batch(tiny_shards, tmp_path):
    # each micro-batch is a share of the rows with its own memories: the same sums as all rows
    options = dict(max_steps=3, dropout=0.0)
    one = run(tiny_shards, tmp_path / "one", micro_batch_size=4, **options)
    two = run(tiny_shards, tmp_path / "two", micro_batch_size=2, **options)
    a, b = weights(one, 3), weights(two, 3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=0)
