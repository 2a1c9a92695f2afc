"""`muppets finetune --downstream` on sentence tasks: frozen ELMo features and the
random-embeddings baseline under the biLSTM / bag-of-embeddings classifiers, on tiny hand-written
tasks whose label is one word (conftest.py): 100% dev accuracy, a biLM left bit-identical while the
mix trains, ELMo beside word embeddings, cached == uncached features, and bad input as one line
with exit 2. The taggers: test_finetune_downstream_tagging.py."""

import contextlib
import io
import json

import pytest
import torch
from conftest import ELMO_TINY as TINY
from conftest import FILLER
from conftest import finetune_elmo as finetune
from safetensors.torch import load_file

from muppets.data.word_features import word_id_batch
from muppets.errors import ConfigError
from muppets.recipes.finetune.features import downstream_seed, prepare_downstream
from muppets.recipes.finetune.run import FinetuneConfig
from muppets.tasks.registry import CONLL2003_TAGS
from muppets.tokenization.characters import batch_to_char_ids
from muppets.training.options import from_options
from muppets.training.pretrained import load_elmo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sst2_elmo(elmo_workspace, tmp_path_factory):
    root, elmo = elmo_workspace
    out = tmp_path_factory.mktemp("sst2-elmo")
    code, lines = finetune(
        ["--task", "sst2", "--data", str(root / "glue"), "--model", str(elmo)]
        + ["--downstream", "bilstm", "--out", str(out), "--seeds", "1,2"]
        + ["--epochs", "6", *TINY]
    )
    assert code == 0
    return out, lines


def test_elmo_bilstm_learns_the_rule_over_two_seeds(sst2_elmo, elmo_workspace):
    out, lines = sst2_elmo
    texts = [
        row.split("\t")[0]
        for name in ("train", "dev")
        for row in (elmo_workspace[0] / "glue" / "SST-2" / f"{name}.tsv")
        .read_text()
        .splitlines()[1:]
    ]
    assert len(texts) == 272 and len(set(texts)) == 236  # every distinct text once
    assert lines[0].startswith("precision: ")  # the run's arithmetic, said first
    assert lines[1] == "sst2: ELMo layers of 236 sentences cached (1 MiB)"
    assert "sst2 seed 1: dev accuracy 100.00" in "\n".join(lines)
    assert "sst2 seed 2: dev accuracy 100.00" in "\n".join(lines)
    assert lines[-1] == "sst2: median dev accuracy over 2 seed(s): 100.00"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"] == {"1": 1.0, "2": 1.0} and summary["median"] == 1.0
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    assert metrics["score"] == 1.0 and metrics["dev"] == {"dev": {"accuracy": 1.0}}
    assert metrics["downstream"] == "bilstm" and metrics["features"] == "elmo"
    assert metrics["freeze"] is True and metrics["train_examples"] == 256
    assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert metrics["steps"] == 6 * 32 and metrics["best_step"] % 32 == 0
    dev = (elmo_workspace[0] / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]
    rows = (out / "seed-1" / "dev_predictions.tsv").read_text().splitlines()
    assert rows == ["index\tprediction"] + [f"{i}\t{r[-1]}" for i, r in enumerate(dev)]
    config = json.loads((out / "seed-1" / "config.json").read_text())
    assert config["model_type"] == "downstream" and config["features"] == "elmo"
    assert config["layers"] == 3 and config["feature_dim"] == 64 and config["pairs"] is False
    assert not (out / "seed-1" / "checkpoints").exists()
    assert (out / "seed-1" / "dev_metric.png").is_file()


def test_the_bilm_stays_bit_identical_while_the_mix_trains(sst2_elmo, elmo_workspace):
    out, _ = sst2_elmo
    weights = load_file(out / "seed-1" / "model.safetensors")
    # the task model holds the mix and its own weights, never the biLM's
    assert {k.split(".")[0] for k in weights} == {"features", "bilstm", "head"}
    assert sorted(k for k in weights if k.startswith("features.")) == [
        "features.mix.gamma",
        "features.mix.scalar_parameters",
    ]
    assert weights["features.mix.gamma"].item() != 1.0  # s = 0, gamma = 1 at the start
    assert not torch.equal(weights["features.mix.scalar_parameters"], torch.zeros(3))

    root, elmo = elmo_workspace
    config = from_options(
        FinetuneConfig,
        task="sst2",
        data=str(root / "glue"),
        model=str(elmo),
        downstream="bag-of-embeddings",
        epochs=1,
        device="cpu",
        feature_cache_mb=0,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        data = prepare_downstream(
            config,
            "sst2",
            root / "glue" / "SST-2" / "train.tsv",
            {"dev": root / "glue" / "SST-2" / "dev.tsv"},
            ["0", "1"],
        )
        bilm = data.source.bilm
        before = {k: v.clone() for k, v in bilm.state_dict().items()}
        downstream_seed(config, data, 1, out.parent / "bag-one-epoch")
    after, saved = bilm.state_dict(), load_elmo(elmo)[0].state_dict()
    assert all(torch.equal(after[k], before[k]) and torch.equal(after[k], saved[k]) for k in saved)
    assert not any(p.requires_grad for p in bilm.parameters()) and not bilm.training


@pytest.mark.parametrize("head", ["classification", "tagging"])
def test_elmo_beside_word_embeddings(elmo_workspace, tmp_path, head):
    """--elmo-word-embeddings: [x_k; ELMo_k] (section 3.3), the embedding and the mix trained, the
    biLM bit-identical and outside the saved model, the baseline's vocabulary saved."""
    root, elmo = elmo_workspace
    task, data_dir = (
        ("sst2", root / "glue") if head == "classification" else ("conll2003", root / "conll")
    )
    config = from_options(
        FinetuneConfig,
        task=task,
        data=str(data_dir),
        model=str(elmo),
        downstream="bilstm",
        elmo_word_embeddings=True,
        epochs=6 if head == "classification" else 1,
        batch_size=8,
        downstream_learning_rate=1e-2,
        downstream_dropout=0.0,
        downstream_hidden_size=16,
        embedding_dim=16,
        device="cpu",
        early_stopping_patience=0,
    )
    if head == "classification":
        paths = (
            data_dir / "SST-2" / "train.tsv",
            {"dev": data_dir / "SST-2" / "dev.tsv"},
            ["0", "1"],
        )
    else:
        paths = (data_dir / "train.txt", {"dev": data_dir / "valid.txt"}, list(CONLL2003_TAGS))
    with contextlib.redirect_stdout(io.StringIO()):
        data = prepare_downstream(config, task, *paths)
        bilm = data.source.elmo.bilm
        before = {k: v.clone() for k, v in bilm.state_dict().items()}
        result = downstream_seed(config, data, 1, tmp_path / "run")
    if head == "classification":
        assert result["score"] == 1.0 and result["dev"] == {"dev": {"accuracy": 1.0}}
    after = bilm.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    sentences = [f.words for f in data.train_features[:5]]
    inputs, _ = data.source.batch(sentences)  # (B, J + 1, T, D): the ids ride in the last layer
    ids, _ = word_id_batch(sentences, data.source.vocabulary)
    assert inputs.shape[1] == 4 and torch.equal(inputs[:, -1, 1 : 1 + ids.shape[1], 0].long(), ids)
    run = tmp_path / "run"
    vocabulary = (run / "word_vocab.txt").read_text().split()
    weights = load_file(run / "model.safetensors")
    assert sorted(k for k in weights if k.startswith("features.")) == [
        "features.elmo.mix.gamma",
        "features.elmo.mix.scalar_parameters",
        "features.words.embedding.weight",
    ]
    assert weights["features.words.embedding.weight"].shape == (len(vocabulary), 16)
    assert weights["bilstm.lstm.weight_ih_l0"].shape[1] == 16 + 64  # [x_k; ELMo_k]
    assert weights["features.elmo.mix.gamma"].item() != 1.0
    config_json = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config_json["features"] == metrics["features"] == "elmo+embeddings"
    assert config_json["feature_dim"] == 80 and config_json["vocab_size"] == len(vocabulary)


def test_cached_layers_are_the_bilms_and_train_as_the_uncached(elmo_workspace, tmp_path):
    root, elmo = elmo_workspace
    args = (
        ["--task", "rte", "--data", str(root / "glue")]
        + ["--model", str(elmo), "--downstream", "bag-of-embeddings"]
        + ["--epochs", "2", *TINY]
    )
    runs = {}
    for cache in ("2048", "0"):
        code, lines = finetune([*args, "--out", str(tmp_path / cache), "--feature-cache-mb", cache])
        assert code == 0
        runs[cache] = json.loads((tmp_path / cache / "seed-1" / "metrics.json").read_text())
    assert (
        lines[1]  # after the precision line
        == "rte: ELMo layers would take 2 MiB > feature_cache_mb=0: the biLM runs on every batch"
    )
    assert runs["2048"]["train_loss"] == pytest.approx(runs["0"]["train_loss"], rel=1e-5)
    for a, b in zip(runs["2048"]["history"], runs["0"]["history"], strict=True):
        assert a["accuracy"] == b["accuracy"]

    # what the cache holds for a sentence is the biLM's own output on <S> words </S>
    config = FinetuneConfig(
        task="rte", data=str(root / "glue"), model=str(elmo), downstream="bilstm", device="cpu"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        data = prepare_downstream(
            config,
            "rte",
            root / "glue" / "RTE" / "train.tsv",
            {"dev": root / "glue" / "RTE" / "dev.tsv"},
            ["a", "b"],
        )
    source = data.source
    three, two = (next(w for w in source.cache if len(w) == n) for n in (3, 2))
    layers, mask = source.batch([three, two])  # from the cache, padded to 3 + 2 positions
    assert layers.shape == (2, 3, 5, 64) and mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    assert torch.all(layers[1, :, 4:] == 0)
    bilm, _, _ = load_elmo(elmo)
    with torch.no_grad():
        alone = torch.cat(bilm(batch_to_char_ids([list(three)])))  # (3, 5, 64): one at a time
    torch.testing.assert_close(layers[0], alone, rtol=0, atol=1e-6)
    fresh, fresh_mask = source.run([three, two])  # the uncached path: the biLM on this batch
    torch.testing.assert_close(fresh, layers, rtol=0, atol=1e-6)
    assert torch.equal(fresh_mask, mask)
    # the task model's features: with s = 0, gamma = 1 the mean of the layers, without <S> </S>
    features, new_mask = source.features()(layers, mask)
    torch.testing.assert_close(features[0], alone.mean(0)[1:-1], rtol=0, atol=1e-6)
    assert new_mask.tolist() == [[True] * 3, [True, True, False]]
    assert torch.all(features[1, 2] == 0)


@pytest.mark.parametrize("task, features", [("sst2", "elmo"), ("rte", "random-embeddings")])
def test_bag_of_embeddings_of_texts_and_pairs(elmo_workspace, tmp_path, task, features):
    root, elmo = elmo_workspace
    model = str(elmo) if features == "elmo" else features
    code, lines = finetune(
        ["--task", task, "--data", str(root / "glue"), "--model", model]
        + ["--downstream", "bag-of-embeddings", "--out", str(tmp_path)]
        + ["--epochs", "6", *TINY]
    )
    assert code == 0 and lines[-1] == f"{task}: median dev accuracy over 1 seed(s): 100.00"
    config = json.loads((tmp_path / "seed-1" / "config.json").read_text())
    assert config["pairs"] is (task == "rte") and config["downstream"] == "bag-of-embeddings"
    weights = load_file(tmp_path / "seed-1" / "model.safetensors")
    dim = {"elmo": 64, "random-embeddings": 16}[features]  # [u; v; |u - v|; u * v] for pairs
    assert weights["head.mlp.1.weight"].shape == (2, 4 * dim if task == "rte" else dim)


@pytest.mark.parametrize("kind", ["bilstm", "bag-of-embeddings"])
def test_random_embeddings_baseline(elmo_workspace, tmp_path, kind):
    root = elmo_workspace[0]
    train = root / "glue" / "SST-2" / "train.tsv"
    rare = tmp_path / "train.tsv"  # one word seen once: below min_count 2, it is <UNK>
    rare.write_text(train.read_text() + "zebra good\t1\n")
    code, lines = finetune(
        ["--task", "sst2", "--train-file", str(rare)]
        + ["--dev-file", str(root / "glue" / "SST-2" / "dev.tsv")]
        + ["--model", "random-embeddings", "--downstream", kind]
        + ["--out", str(tmp_path / "o"), "--epochs", "4", *TINY]
    )
    assert code == 0 and lines[-1] == "sst2: median dev accuracy over 1 seed(s): 100.00"
    run = tmp_path / "o" / "seed-1"
    vocabulary = (run / "word_vocab.txt").read_text().split()
    assert vocabulary[:4] == ["<PAD>", "<S>", "</S>", "<UNK>"]
    assert sorted(vocabulary[4:]) == sorted(["bad", "good", *FILLER]) and "zebra" not in vocabulary
    assert vocabulary[4:6] == ["good", "bad"]  # 129 and 128 times, then the fillers by count
    weights = load_file(run / "model.safetensors")
    assert weights["features.embedding.weight"].shape == (4 + 12, 16)
    assert torch.all(weights["features.embedding.weight"][0] == 0)  # <PAD> stays zero
    config = json.loads((run / "config.json").read_text())
    assert config["features"] == "random-embeddings" and config["vocab_size"] == 16


def test_bad_input_is_one_line_with_exit_status_2(elmo_workspace, tmp_path, cli_error):
    root, elmo = elmo_workspace
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    base = ["finetune", "--task", "sst2", "--data", str(root / "glue")]
    base += ["--out", str(tmp_path / "o")]
    message = cli_error([*base, "--model", str(bert), "--downstream", "bilstm"])
    assert (
        message == f"muppets: error: {bert / 'config.json'}: has model_type 'bert', not "
        "'elmo': an ELMo checkpoint is needed"
    )
    message = cli_error([*base, "--model", str(elmo), "--downstream", "lstm"])
    assert "unknown downstream 'lstm'; valid: bilstm, bag-of-embeddings" in message
    message = cli_error([*base, "--model", "random-embeddings"])
    assert "random-embeddings is the baseline of --downstream" in message
    message = cli_error(
        [*base, "--model", "random-embeddings", "--downstream", "bilstm", "--elmo-word-embeddings"]
    )
    assert "--model must be an ELMo checkpoint, not random-embeddings" in message
    message = cli_error(
        [*base, "--model", str(elmo), "--downstream", "bilstm", "--learning-rate", "1e-3"]
    )
    assert "with --downstream set --downstream-learning-rate" in message
    with pytest.raises(ConfigError, match="no model for squad"):
        FinetuneConfig(task="squad", model=str(elmo), downstream="bilstm")
    with pytest.raises(ConfigError, match="downstream_dropout must be in"):
        FinetuneConfig(task="sst2", model=str(elmo), downstream="bilstm", downstream_dropout=1.0)
