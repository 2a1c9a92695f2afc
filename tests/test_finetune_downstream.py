"""`muppets finetune --downstream`: frozen ELMo features and the random-embeddings baseline under
the biLSTM / bag-of-embeddings classifiers and taggers, on tiny hand-written tasks whose label is
one word: 100% dev accuracy / entity F1, a biLM left bit-identical while the mix trains,
cached == uncached features, the word-level batches, and bad input as one line with exit 2."""

import contextlib
import io
import json
import random

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.data.readers.conll import Sentence
from muppets.data.readers.tabular import Example
from muppets.data.word_features import target_batch, word_features, word_id_batch
from muppets.errors import ConfigError
from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.recipes.finetune.features import downstream_seed, prepare_downstream
from muppets.recipes.finetune.run import FinetuneConfig
from muppets.tasks.registry import CONLL2003_TAGS
from muppets.tokenization.characters import batch_to_char_ids
from muppets.tokenization.words import build_word_vocabulary
from muppets.training.checkpoint import save_pretrained
from muppets.training.options import from_options
from muppets.training.pretrained import load_elmo

FILLER = ["the", "a", "this", "really", "quite", "very", "was", "is", "and", "so"]
PEOPLE, CITIES = ["john", "mary", "ada", "bob"], ["paris", "london", "rome", "oslo"]
# Small models, a high rate and no dropout: the rules are learnt in a few hundred steps.
TINY = ["--batch-size", "8", "--downstream-learning-rate", "1e-2", "--downstream-dropout", "0",
        "--downstream-hidden-size", "16", "--embedding-dim", "16", "--device", "cpu",
        "--early-stopping-patience", "0"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sentence(rng, word):
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
    words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """SST-2 (label 1 iff "good"), RTE (entailment iff sentence2 says "good"), a CoNLL NER set,
    and a random elmo-tiny biLM, widened to 64 features and with a char CNN 20x bilm-tf's init,
    so that its frozen features are large enough to learn from in a few steps."""
    root, rng = tmp_path_factory.mktemp("downstream"), random.Random(0)
    sst, rte = root / "glue" / "SST-2", root / "glue" / "RTE"
    sst.mkdir(parents=True), rte.mkdir(parents=True)
    for name, n in (("train", 256), ("dev", 16)):
        rows = [f"{sentence(rng, 'good' if i % 2 else 'bad')}\t{i % 2}" for i in range(n)]
        (sst / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        pairs = [f"{i}\t{sentence(rng, 'so')}\t{sentence(rng, 'good' if i % 2 else 'bad')}\t"
                 + ("entailment" if i % 2 else "not_entailment") for i in range(n)]  # fmt: skip
        header = "index\tsentence1\tsentence2\tlabel\n"
        (rte / f"{name}.tsv").write_text(header + "\n".join(pairs) + "\n")
    conll = root / "conll"
    conll.mkdir()
    for name, n in (("train", 48), ("valid", 8), ("test", 8)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            p, c = rng.choice(PEOPLE), rng.choice(CITIES)
            lines += [f"{p} NNP B-NP B-PER", "went VBD B-VP O", "to TO B-PP O",
                      f"{c} NNP B-NP B-LOC", ". . O O", ""]  # fmt: skip
        (conll / f"{name}.txt").write_text("\n".join(lines))
    elmo = root / "elmo"
    elmo.mkdir()
    vocabulary = build_word_vocabulary({"the": 2, "good": 1})
    vocabulary.save(elmo / "word_vocab.txt")
    config = ElmoConfig(**{**PRESETS["elmo-tiny"], "vocab_size": len(vocabulary),
                           "projection_dim": 32, "cell_dim": 64})  # fmt: skip
    torch.manual_seed(0)
    bilm = ElmoBiLM(config)
    with torch.no_grad():
        for conv in bilm.token_encoder.convolutions:
            conv.weight.mul_(20.0)
    save_pretrained(elmo, bilm, config.to_dict(), [elmo / "word_vocab.txt"])
    return root, elmo


def finetune(args) -> tuple[int, list[str]]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["finetune", *args])
    return code, stdout.getvalue().splitlines()


def run_error(args, capsys) -> str:
    code = main(["finetune", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("muppets: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def sst2_elmo(workspace, tmp_path_factory):
    root, elmo = workspace
    out = tmp_path_factory.mktemp("sst2-elmo")
    code, lines = finetune(["--task", "sst2", "--data", str(root / "glue"), "--model", str(elmo),
                            "--downstream", "bilstm", "--out", str(out), "--seeds", "1,2",
                            "--epochs", "6", *TINY])  # fmt: skip
    assert code == 0
    return out, lines


def test_elmo_bilstm_learns_the_rule_over_two_seeds(sst2_elmo, workspace):
    out, lines = sst2_elmo
    texts = [
        row.split("\t")[0]
        for name in ("train", "dev")
        for row in (workspace[0] / "glue" / "SST-2" / f"{name}.tsv").read_text().splitlines()[1:]
    ]
    assert len(texts) == 272 and len(set(texts)) == 236  # every distinct text once
    assert lines[0] == "sst2: ELMo layers of 236 sentences cached (1 MiB)"
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
    dev = (workspace[0] / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]
    rows = (out / "seed-1" / "dev_predictions.tsv").read_text().splitlines()
    assert rows == ["index\tprediction"] + [f"{i}\t{r[-1]}" for i, r in enumerate(dev)]
    config = json.loads((out / "seed-1" / "config.json").read_text())
    assert config["model_type"] == "downstream" and config["features"] == "elmo"
    assert config["layers"] == 3 and config["feature_dim"] == 64 and config["pairs"] is False
    assert not (out / "seed-1" / "checkpoints").exists()
    assert (out / "seed-1" / "dev_metric.png").is_file()


def test_the_bilm_stays_bit_identical_while_the_mix_trains(sst2_elmo, workspace):
    out, _ = sst2_elmo
    weights = load_file(out / "seed-1" / "model.safetensors")
    # the task model holds the mix and its own weights, never the biLM's
    assert {k.split(".")[0] for k in weights} == {"features", "bilstm", "head"}
    assert sorted(k for k in weights if k.startswith("features.")) == [
        "features.mix.gamma", "features.mix.scalar_parameters"]  # fmt: skip
    assert weights["features.mix.gamma"].item() != 1.0  # s = 0, gamma = 1 at the start
    assert not torch.equal(weights["features.mix.scalar_parameters"], torch.zeros(3))

    root, elmo = workspace
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
def test_elmo_beside_word_embeddings(workspace, tmp_path, head):
    """--elmo-word-embeddings: [x_k; ELMo_k] (section 3.3), the embedding and the mix trained, the
    biLM bit-identical and outside the saved model, the baseline's vocabulary saved."""
    root, elmo = workspace
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
        "features.elmo.mix.gamma", "features.elmo.mix.scalar_parameters",
        "features.words.embedding.weight"]  # fmt: skip
    assert weights["features.words.embedding.weight"].shape == (len(vocabulary), 16)
    assert weights["bilstm.lstm.weight_ih_l0"].shape[1] == 16 + 64  # [x_k; ELMo_k]
    assert weights["features.elmo.mix.gamma"].item() != 1.0
    config_json = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config_json["features"] == metrics["features"] == "elmo+embeddings"
    assert config_json["feature_dim"] == 80 and config_json["vocab_size"] == len(vocabulary)


def test_cached_layers_are_the_bilms_and_train_as_the_uncached(workspace, tmp_path):
    root, elmo = workspace
    args = ["--task", "rte", "--data", str(root / "glue"), "--model", str(elmo), "--downstream",
            "bag-of-embeddings", "--epochs", "2", *TINY]  # fmt: skip
    runs = {}
    for cache in ("2048", "0"):
        code, lines = finetune([*args, "--out", str(tmp_path / cache), "--feature-cache-mb", cache])
        assert code == 0
        runs[cache] = json.loads((tmp_path / cache / "seed-1" / "metrics.json").read_text())
    assert (
        lines[0]
        == "rte: ELMo layers would take 2 MiB > feature_cache_mb=0: the biLM runs on every batch"
    )
    assert runs["2048"]["train_loss"] == pytest.approx(runs["0"]["train_loss"], rel=1e-5)
    for a, b in zip(runs["2048"]["history"], runs["0"]["history"], strict=True):
        assert a["accuracy"] == b["accuracy"]

    # what the cache holds for a sentence is the biLM's own output on <S> words </S>
    config = FinetuneConfig(task="rte", data=str(root / "glue"), model=str(elmo),
                            downstream="bilstm", device="cpu")  # fmt: skip
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
def test_bag_of_embeddings_of_texts_and_pairs(workspace, tmp_path, task, features):
    root, elmo = workspace
    model = str(elmo) if features == "elmo" else features
    code, lines = finetune(["--task", task, "--data", str(root / "glue"), "--model", model,
                            "--downstream", "bag-of-embeddings", "--out", str(tmp_path),
                            "--epochs", "6", *TINY])  # fmt: skip
    assert code == 0 and lines[-1] == f"{task}: median dev accuracy over 1 seed(s): 100.00"
    config = json.loads((tmp_path / "seed-1" / "config.json").read_text())
    assert config["pairs"] is (task == "rte") and config["downstream"] == "bag-of-embeddings"
    weights = load_file(tmp_path / "seed-1" / "model.safetensors")
    dim = {"elmo": 64, "random-embeddings": 16}[features]  # [u; v; |u - v|; u * v] for pairs
    assert weights["head.mlp.1.weight"].shape == (2, 4 * dim if task == "rte" else dim)


@pytest.mark.parametrize("kind", ["bilstm", "bag-of-embeddings"])
def test_random_embeddings_baseline(workspace, tmp_path, kind):
    root = workspace[0]
    train = root / "glue" / "SST-2" / "train.tsv"
    rare = tmp_path / "train.tsv"  # one word seen once: below min_count 2, it is <UNK>
    rare.write_text(train.read_text() + "zebra good\t1\n")
    code, lines = finetune(["--task", "sst2", "--train-file", str(rare), "--dev-file",
                            str(root / "glue" / "SST-2" / "dev.tsv"), "--model",
                            "random-embeddings", "--downstream", kind, "--out", str(tmp_path / "o"),
                            "--epochs", "4", *TINY])  # fmt: skip
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


def test_conll_tagger_over_elmo_scores_dev_and_test(workspace, tmp_path):
    root, elmo = workspace
    code, lines = finetune(["--task", "conll2003", "--data", str(root / "conll"), "--model",
                            str(elmo), "--downstream", "bilstm", "--out", str(tmp_path),
                            "--epochs", "16", *TINY])  # fmt: skip
    assert code == 0
    assert "conll2003 seed 1: test f1 100.00" in lines
    assert lines[-1] == "conll2003: median dev f1 over 1 seed(s): 100.00"
    assert_conll_run_is_gold(tmp_path / "seed-1", root / "conll")
    weights = load_file(tmp_path / "seed-1" / "model.safetensors")
    assert {k.split(".")[0] for k in weights} == {"features", "bilstm", "output"}


def assert_conll_run_is_gold(run, conll):
    """F1 1.0 on dev and test, and every dev word predicted with its gold tag."""
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["dev"]["f1"] == 1.0 and metrics["test"]["f1"] == 1.0
    assert metrics["dev"]["dev"]["per_type"]["PER"]["support"] == 8
    predicted = (run / "dev_predictions.txt").read_text().splitlines()
    gold = (conll / "valid.txt").read_text().splitlines()[2:] + [""]
    assert len(predicted) == len(gold) == 8 * 6  # a blank line after each sentence
    for got, want in zip(predicted, gold, strict=True):
        w = want.split()
        assert got.split() == ([w[0], w[-1], w[-1]] if w else [])


@pytest.mark.parametrize("features", ["elmo", "random-embeddings"])
def test_bag_of_embeddings_tagger_is_a_softmax_per_word(workspace, tmp_path, features):
    """Each CoNLL tag is its word's own (a person's name B-PER, a city B-LOC, the rest O), so a
    softmax over a word's features alone, with no biLSTM, tags dev and test perfectly."""
    root, elmo = workspace
    model = str(elmo) if features == "elmo" else features
    # one linear map over the mix of a random biLM learns slower than the biLSTM: a higher rate
    # (100% dev F1 from epoch 7-9 over ELMo, 1-2 over embeddings, across seeds 1-5)
    code, lines = finetune(["--task", "conll2003", "--data", str(root / "conll"), "--model",
                            model, "--downstream", "bag-of-embeddings", "--out", str(tmp_path),
                            "--epochs", "16", *TINY,
                            "--downstream-learning-rate", "1e-1"])  # fmt: skip
    assert code == 0
    assert "conll2003 seed 1: test f1 100.00" in lines
    assert lines[-1] == "conll2003: median dev f1 over 1 seed(s): 100.00"
    assert_conll_run_is_gold(tmp_path / "seed-1", root / "conll")
    config = json.loads((tmp_path / "seed-1" / "config.json").read_text())
    assert config["downstream"] == "bag-of-embeddings" and config["head"] == "tagging"
    weights = load_file(tmp_path / "seed-1" / "model.safetensors")
    own = {"elmo": ["features.mix.gamma", "features.mix.scalar_parameters"],
           "random-embeddings": ["features.embedding.weight"]}[features]  # fmt: skip
    assert sorted(weights) == sorted([*own, "output.bias", "output.weight"])  # no LSTM
    dim = {"elmo": 64, "random-embeddings": 16}[features]
    assert weights["output.weight"].shape == (len(config["labels"]), dim)


def test_words_ids_and_targets():
    examples = [Example("it 's good.", None, 1, "train-0", "f", 2),
                Example("so", "is n't", 0, "train-1", "f", 3)]  # fmt: skip
    moses, spaces = word_features(examples), word_features(examples, whitespace_tokens=True)
    assert moses[0].words == ("it", "'", "s", "good", ".") and moses[1].words_b == ("is", "n", "'t")
    assert spaces[0].words == ("it", "'s", "good.") and spaces[1].words_b == ("is", "n't")
    assert len(spaces[1]) == 2  # the longer text of the pair
    vocabulary = build_word_vocabulary({"good.": 3, "it": 2, "so": 1}, min_count=2)
    ids, mask = word_id_batch([spaces[0].words, ()], vocabulary)
    assert ids.tolist() == [[5, 3, 4], [0, 0, 0]] and mask.sum(1).tolist() == [3, 0]
    assert word_id_batch([()], vocabulary)[0].shape == (1, 1)  # a position even when empty
    assert target_batch(spaces)["labels"].tolist() == [1, 0]
    tagged = [Sentence(["a", "b"], ["O", "B-PER"], "f", 1), Sentence(["c"], ["B-LOC"], "f", 4)]
    features = word_features(tagged, tagging=True, labels=["O", "B-PER", "B-LOC"])
    assert target_batch(features)["labels"].tolist() == [[0, 1], [2, -100]]


def test_bad_input_is_one_line_with_exit_status_2(workspace, tmp_path, capsys):
    root, elmo = workspace
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    base = ["--task", "sst2", "--data", str(root / "glue"), "--out", str(tmp_path / "o")]
    message = run_error([*base, "--model", str(bert), "--downstream", "bilstm"], capsys)
    assert message == f"muppets: error: {bert / 'config.json'}: has model_type 'bert', not " \
                      "'elmo': an ELMo checkpoint is needed"  # fmt: skip
    message = run_error([*base, "--model", str(elmo), "--downstream", "lstm"], capsys)
    assert "unknown downstream 'lstm'; valid: bilstm, bag-of-embeddings" in message
    message = run_error([*base, "--model", "random-embeddings"], capsys)
    assert "random-embeddings is the baseline of --downstream" in message
    message = run_error([*base, "--model", "random-embeddings", "--downstream", "bilstm",
                         "--elmo-word-embeddings"], capsys)  # fmt: skip
    assert "--model must be an ELMo checkpoint, not random-embeddings" in message
    message = run_error([*base, "--model", str(elmo), "--downstream", "bilstm",
                         "--learning-rate", "1e-3"], capsys)  # fmt: skip
    assert "with --downstream set --downstream-learning-rate" in message
    with pytest.raises(ConfigError, match="no model for squad"):
        FinetuneConfig(task="squad", model=str(elmo), downstream="bilstm")
    with pytest.raises(ConfigError, match="downstream_dropout must be in"):
        FinetuneConfig(task="sst2", model=str(elmo), downstream="bilstm", downstream_dropout=1.0)
