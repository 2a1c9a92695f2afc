"""Fine-tuning end to end on tiny hand-written tasks: a rule learnt to 100% dev accuracy over two
seeds, --freeze, the GLUE table, SQuAD and CoNLL runs, evaluate/predict, batch invariance of
predictions, and bad input as one line with FILE:LINE and exit status 2."""

import contextlib
import io
import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.models.registry import build_encoder, build_pretraining_model, preset_config
from muppets.tasks.prediction import predict
from muppets.tasks.registry import build_head, task_spec
from muppets.tasks.setup import TaskSetup
from muppets.tokenization.wordpiece import train_wordpiece
from muppets.training.checkpoint import save_pretrained
from muppets.training.logging import read_metrics
from muppets.training.loop import TrainConfig, train

NOUNS = ["movie", "film", "plot", "actor", "story", "script", "scene", "ending"]
FILLER = ["the", "a", "this", "really", "quite", "very", "was", "is", "and", "so"]
CITIES, PEOPLE = ["paris", "london", "rome"], ["john", "mary", "ada"]
CONTEXT = "{p} lives in {c} . the river in {c} is old and the park is new . {p} likes the park ."
TINY = ["--learning-rate", "1e-2", "--pooling", "cls", "--batch-size", "8"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two cores shared with other jobs: one thread is ~10x faster than two spinning ones here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sentence(rng, word):
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))] + [rng.choice(NOUNS)]
    words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def write_tasks(root, rng):
    """SST-2 (label 1 iff "good"), RTE (entailment iff sentence2 says "good"), SQuAD, CoNLL."""
    sst, rte = root / "glue" / "SST-2", root / "glue" / "RTE"
    sst.mkdir(parents=True), rte.mkdir(parents=True)
    for name, n in (("train", 64), ("dev", 16)):
        rows = [f"{sentence(rng, 'good' if i % 2 else 'bad')}\t{i % 2}" for i in range(n)]
        (sst / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        pairs = [
            f"{i}\t{sentence(rng, 'so')}\t{sentence(rng, 'good' if i % 2 else 'bad')}\t"
            + ("entailment" if i % 2 else "not_entailment")
            for i in range(n // 2)
        ]
        header = "index\tsentence1\tsentence2\tlabel\n"
        (rte / f"{name}.tsv").write_text(header + "\n".join(pairs) + "\n")
    mnli, nli = root / "glue" / "MNLI", ["contradiction", "entailment", "neutral"]
    mnli.mkdir()
    for name in ("train", "dev_matched", "dev_mismatched"):
        rows = [f"{i}\t{sentence(rng, 'so')}\t{sentence(rng, ['bad', 'good', 'so'][i % 3])}\t"
                + nli[i % 3] for i in range(12)]  # fmt: skip
        (mnli / f"{name}.tsv").write_text("index\tsentence1\tsentence2\tgold_label\n"
                                          + "\n".join(rows) + "\n")  # fmt: skip
    reviews = root / "reviews"
    reviews.mkdir()
    for name, n in (("train", 32), ("dev", 8)):
        lines = [json.dumps({"review": sentence(rng, "good" if i % 2 else "bad"),
                             "stars": "pos" if i % 2 else "neg"}) for i in range(n)]  # fmt: skip
        (reviews / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    test = [f"{i}\t{sentence(rng, 'good' if i % 3 else 'bad')}" for i in range(6)]
    (sst / "test.tsv").write_text("index\tsentence\n" + "\n".join(test) + "\n")
    paragraphs = []
    for k in range(6):
        p, c = PEOPLE[k % 3], CITIES[k % 3]
        context = CONTEXT.format(p=p, c=c)
        qas = [{"id": f"q{k}", "question": f"where does {p} live ?",
                "answers": [{"text": c, "answer_start": context.index(c)}]}]  # fmt: skip
        if k == 0:
            qas.append({"id": "q-none", "question": "who owns the moon ?", "answers": [],
                        "is_impossible": True})  # fmt: skip
        paragraphs.append({"context": context, "qas": qas})
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}
    (root / "squad.json").write_text(json.dumps(squad))
    paragraphs[0]["qas"].pop()  # v1.1: every question has an answer
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}
    (root / "squad-v1.json").write_text(json.dumps(squad))
    conll = root / "conll"
    conll.mkdir()
    for name in ("train", "valid", "test"):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for k in range(8):
            p, c = PEOPLE[k % 3], CITIES[(k + 1) % 3]
            lines += [f"{p} NNP B-NP B-PER", "went VBD B-VP O", "to TO B-PP O",
                      f"{c} NNP B-NP B-LOC", ". . O O", ""]  # fmt: skip
        (conll / f"{name}.txt").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Task files, and a tiny random BERT checkpoint with its WordPiece tokenizer."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    write_tasks(root, rng)
    texts = [sentence(rng, w) for w in ("good", "bad", "so") for _ in range(20)]
    texts += [CONTEXT.format(p=p, c=c) for p in PEOPLE for c in CITIES]
    texts += ["who owns the moon ? where does went to live", ". . ."]
    tokenizer = train_wordpiece(texts, vocab_size=90, min_frequency=1)
    config = preset_config("bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32,
                           num_attention_heads=2, intermediate_size=64)  # fmt: skip
    torch.manual_seed(0)
    checkpoint = root / "checkpoint"
    save_pretrained(checkpoint, build_pretraining_model(config), config.to_dict())
    tokenizer.save(checkpoint)
    return root, checkpoint, tokenizer, config


def finetune(args, capsys):
    code = main(["finetune", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def sst2_run(workspace, tmp_path_factory):
    root, checkpoint, _, _ = workspace
    out = tmp_path_factory.mktemp("sst2")
    args = ["--task", "sst2", "--data", str(root / "glue"), "--model", str(checkpoint),
            "--out", str(out), "--seeds", "1,2", "--epochs", "6", "--early-stopping-patience",
            "0", *TINY]  # fmt: skip
    stdout = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(stdout):
        assert main(["finetune", *args]) == 0
    return out, stdout.getvalue().splitlines()


def test_two_seeds_learn_the_rule_and_report_the_median(sst2_run):
    out, lines = sst2_run
    assert "sst2 seed 1: dev accuracy 100.00" in "\n".join(lines)
    assert "sst2 seed 2: dev accuracy 100.00" in "\n".join(lines)
    assert lines[-1] == "sst2: median dev accuracy over 2 seed(s): 100.00"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"] == {"1": 1.0, "2": 1.0} and summary["median"] == 1.0
    metrics = json.loads((out / "seed-1" / "metrics.json").read_text())
    assert set(metrics) == {
        "task", "seed", "metric", "score", "best_step", "best_epoch", "dev", "history",
        "train_examples", "train_features", "steps", "stopped", "freeze", "train_loss",
        "elapsed_seconds",
    }  # fmt: skip
    assert metrics["score"] == 1.0 and metrics["dev"] == {"dev": {"accuracy": 1.0}}
    assert [h["epoch"] for h in metrics["history"]][:2] == [1.0, 2.0]
    assert metrics["train_examples"] == 64 and metrics["best_step"] % 8 == 0
    best = [h for h in metrics["history"] if h["step"] == metrics["best_step"]]
    assert best[0]["accuracy"] == 1.0 and max(h["accuracy"] for h in metrics["history"]) == 1.0
    task = json.loads((out / "seed-1" / "task.json").read_text())
    assert task["task"] == "sst2" and task["labels"] == ["0", "1"] and task["pooling"] == "cls"
    for name in ("config.json", "model.safetensors", "vocab.txt", "dev_metric.png"):
        assert (out / "seed-1" / name).is_file(), name
    assert not (out / "seed-1" / "checkpoints").exists()


def test_evaluate_and_predict_the_fine_tuned_model(sst2_run, workspace, tmp_path, capsys):
    out, _ = sst2_run
    root = workspace[0]
    assert main(["evaluate", "--model", str(out / "seed-2"), "--data", str(root / "glue")]) == 0
    assert capsys.readouterr().out.strip() == "sst2 dev (16 examples): accuracy 1.0000"
    target = tmp_path / "SST-2.tsv"
    test = root / "glue" / "SST-2" / "test.tsv"
    # a multi-seed run directory stands for its best seed
    assert main(["predict", "--model", str(out), "--input", str(test), "--out", str(target)]) == 0
    rows = target.read_text().splitlines()
    want = ["1" if "good" in line else "0" for line in test.read_text().splitlines()[1:]]
    assert rows == ["index\tprediction"] + [f"{i}\t{y}" for i, y in enumerate(want)]


def test_freeze_leaves_the_encoder_bit_identical(workspace, sst2_run, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    finetune(["--task", "sst2", "--data", str(root / "glue"), "--model", str(checkpoint),
              "--out", str(tmp_path), "--epochs", "1", "--freeze", *TINY], capsys)  # fmt: skip
    before = load_file(checkpoint / "model.safetensors")
    for run, frozen in ((tmp_path / "seed-1", True), (sst2_run[0] / "seed-1", False)):
        after = load_file(run / "model.safetensors")
        encoder = [k for k in after if k.startswith("encoder.")]
        assert len(encoder) == len([k for k in before if k.startswith("encoder.")])
        same = all(torch.equal(after[k], before[k]) for k in encoder)
        assert same == frozen  # the full fine-tuning run changed it: the check can fail
        assert "classifier.weight" in after
    assert json.loads((tmp_path / "seed-1" / "metrics.json").read_text())["freeze"] is True


def test_glue_runs_every_task_present_and_prints_the_table(workspace, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    out = finetune(["--task", "glue", "--data", str(root / "glue"), "--model", str(checkpoint),
                    "--out", str(tmp_path), "--epochs", "1", *TINY], capsys)  # fmt: skip
    table = out.strip().splitlines()[-5:]
    assert table[0].split() == ["task", "metric", "dev", "seeds"]
    names = [row.split()[:2] for row in table[1:]]
    assert names == [["sst2", "accuracy"], ["mnli-m", "accuracy"], ["mnli-mm", "accuracy"],
                     ["rte", "accuracy"]]  # fmt: skip
    rows = json.loads((tmp_path / "glue.json").read_text())
    assert [r["task"] for r in rows] == ["sst2", "mnli-m", "mnli-mm", "rte"]
    for row, line in zip(rows, table[1:], strict=True):
        assert line.split()[2] == f"{row['dev'][0]:.1f}" and 0 <= row["dev"][0] <= 100
    assert (tmp_path / "rte" / "seed-1" / "task.json").is_file()


@pytest.mark.parametrize("v2", [True, False])
def test_squad_fine_tunes_and_predicts_answers(workspace, tmp_path, capsys, v2):
    root, checkpoint, _, _ = workspace
    squad = str(root / ("squad.json" if v2 else "squad-v1.json"))
    finetune(["--task", "squad", "--train-file", squad, "--dev-file", squad, "--model",
              str(checkpoint), "--out", str(tmp_path), "--epochs", "1", "--max-seq-length",
              "24", "--doc-stride", "6", *TINY], capsys)  # fmt: skip
    metrics = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())
    assert metrics["metric"] == "f1" and metrics["train_features"] > 7  # several windows each
    dev = metrics["dev"]["dev"]
    if v2:
        assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"} <= set(dev)
    else:
        assert set(dev) == {"exact", "f1", "total", "missing"} and dev["missing"] == 0
    ids = {f"q{k}" for k in range(6)} | ({"q-none"} if v2 else set())
    assert dev["total"] == len(ids)
    assert set(json.loads((tmp_path / "seed-1" / "dev_predictions.json").read_text())) == ids
    assert json.loads((tmp_path / "seed-1" / "task.json").read_text())["squad_v2"] is v2
    target = tmp_path / "predictions.json"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", squad, "--out"]
    assert main([*args, str(target)]) == 0
    answers = json.loads(target.read_text())
    assert set(answers) == ids and all(isinstance(a, str) for a in answers.values())


def test_a_new_jsonl_dataset_needs_only_a_column_mapping(workspace, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    train, dev = root / "reviews" / "train.jsonl", root / "reviews" / "dev.jsonl"
    finetune(["--task", "tabular", "--train-file", str(train), "--dev-file", str(dev),
              "--text-a", "review", "--label-column", "stars", "--model", str(checkpoint),
              "--out", str(tmp_path), "--epochs", "1", *TINY], capsys)  # fmt: skip
    task = json.loads((tmp_path / "seed-1" / "task.json").read_text())
    assert task["labels"] == ["neg", "pos"] and task["columns"]["text_a"] == "review"
    metrics = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())
    assert set(metrics["dev"]["dev"]) == {"accuracy", "f1", "mcc"}
    target = tmp_path / "reviews.tsv"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", str(dev)]
    assert main([*args, "--out", str(target)]) == 0
    rows = target.read_text().splitlines()
    assert len(rows) == 9 and all(r.split("\t")[1] in ("neg", "pos") for r in rows[1:])


def test_conll_ner_writes_word_gold_pred_lines(workspace, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    finetune(["--task", "conll2003", "--data", str(root / "conll"), "--model", str(checkpoint),
              "--out", str(tmp_path), "--epochs", "1", *TINY], capsys)  # fmt: skip
    dev = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())["dev"]["dev"]
    assert {"precision", "recall", "f1", "per_type", "words_unpredicted"} <= set(dev)
    target = tmp_path / "test.out"
    test = root / "conll" / "test.txt"
    args = ["predict", "--model", str(tmp_path / "seed-1"), "--input", str(test)]
    assert main([*args, "--out", str(target)]) == 0
    lines = target.read_text().splitlines()
    tokens = [line.split() for line in test.read_text().splitlines()[2:]] + [[]]
    assert len(lines) == len(tokens) == 8 * 6  # a blank line after each sentence
    for got, want in zip(lines, tokens, strict=True):
        assert got.split()[:2] == ([want[0], want[-1]] if want else [])
        assert not want or got.split()[2] in task_spec("conll2003").labels


@pytest.mark.parametrize("head", ["classification", "regression", "span_qa", "tagging"])
def test_batched_predictions_equal_one_at_a_time(workspace, head):
    root, _, tokenizer, config = workspace
    task = {"classification": "rte", "regression": "tabular-regression", "span_qa": "squad",
            "tagging": "conll2003"}[head]  # fmt: skip
    spec = task_spec(task)
    labels = list(spec.labels) if head != "regression" else []
    setup = TaskSetup(
        task,
        head,
        labels,
        24,
        pooling="mean",
        doc_stride=6,
        columns={"text_a": "sentence1", "text_b": "sentence2", "label": "index"},
    )
    path = {"rte": root / "glue" / "RTE" / "dev.tsv", "tabular-regression":
            root / "glue" / "RTE" / "dev.tsv", "squad": root / "squad.json",
            "conll2003": root / "conll" / "valid.txt"}[task]  # fmt: skip
    examples = setup.read(path, "dev")
    features = setup.featurize(examples, tokenizer)
    torch.manual_seed(1)
    model = build_head(spec, build_encoder(config), max(1, len(labels)), pooling="mean").eval()
    batched, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=64)
    alone, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size=1)
    if head == "regression":
        torch.testing.assert_close(torch.tensor(batched), torch.tensor(alone), rtol=0, atol=1e-5)
        assert len(set(batched.round(4).tolist())) > 1  # not a constant output
    elif head == "classification":
        assert batched.tolist() == alone.tolist()
    else:
        assert batched == alone
    if head == "span_qa":
        assert len(features) > len(examples)  # several windows per question


class Squares:
    """A regression objective (loop contract) and an endless batch source for the loop test."""

    def __call__(self, model, batch):
        return {"mse": (model(batch["x"]).squeeze(-1) - batch["y"]).pow(2).sum()}

    def count_targets(self, batch):
        return {"mse": len(batch["y"])}

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(4, 2, generator=g)
            yield {"x": x, "y": x.sum(-1), "attention_mask": torch.ones(4)}

    def state_dict(self):
        return {}


def test_loop_keeps_the_best_model_and_stops_after_patience(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    scores, seen = iter([0.5, 0.7, 0.6, 0.65, 0.9]), {}

    def evaluate_fn(m):
        seen[len(seen) + 1] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"score": next(scores)}

    config = TrainConfig(max_steps=10, learning_rate=0.1, warmup_steps=0, eval_every=2,
                         save_every=0, best_metric="score", early_stopping_patience=2)  # fmt: skip
    result = train(model, Squares(), Squares(), config, tmp_path, config_dict={},
                   evaluate_fn=evaluate_fn)  # fmt: skip
    # evaluations at steps 2, 4 (best), 6 and 8 (two without a new best): stop at step 8
    assert result["stopped"] == "early_stopping" and result["step"] == 8
    assert result["best"] == {"step": 4, "value": 0.7}
    best = load_file(tmp_path / "best" / "model.safetensors")
    assert all(torch.equal(best[k], seen[2][k]) for k in best)
    assert not all(torch.equal(best[k], model.state_dict()[k]) for k in best)
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
    assert [(r["step"], r["score"]) for r in evals] == [(2, 0.5), (4, 0.7), (6, 0.6), (8, 0.65)]


def run_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("muppets: error: "), err
    return err[0]


def broken_glue(root, tmp_path, file, text):
    data = tmp_path / "glue"
    shutil.copytree(root / "glue", data)
    (data / "SST-2" / file).write_text(text)
    return data


@pytest.mark.parametrize(
    "file, text, message",
    [
        ("train.tsv", "sentence\tlabel\ngood film\t1\ngood\tfilm\t1\n",
         "SST-2/train.tsv:3: expected 2 tab-separated columns, found 3"),
        ("dev.tsv", "sentence\tlabel\ngood film\t2\n", "SST-2/dev.tsv:2: unknown label '2'"),
        ("dev.tsv", "", "SST-2/dev.tsv:1: no examples in the file"),
    ],
)  # fmt: skip
def test_bad_glue_files_are_one_line_with_file_and_line(
    workspace, tmp_path, capsys, file, text, message
):
    root, checkpoint, _, _ = workspace
    data = broken_glue(root, tmp_path, file, text)
    args = ["finetune", "--task", "sst2", "--data", str(data), "--model", str(checkpoint)]
    assert message in run_error([*args, "--out", str(tmp_path / "out")], capsys)


def test_bad_squad_and_conll_files_name_file_and_line(workspace, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    bad = tmp_path / "train.json"
    bad.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    args = [
        "finetune",
        "--task",
        "squad",
        "--train-file",
        str(bad),
        "--dev-file",
        str(root / "squad.json"),
        "--model",
        str(checkpoint),
        "--out",
        str(tmp_path / "o"),
    ]
    assert f"{bad}:2: invalid JSON" in run_error(args, capsys)
    conll = tmp_path / "conll"
    shutil.copytree(root / "conll", conll)
    lines = (conll / "train.txt").read_text().splitlines()
    lines[4] = "to"  # the tag column is missing
    (conll / "train.txt").write_text("\n".join(lines))
    args = ["finetune", "--task", "conll2003", "--data", str(conll), "--model", str(checkpoint),
            "--out", str(tmp_path / "o2")]  # fmt: skip
    assert f"{conll / 'train.txt'}:5: expected at least 2" in run_error(args, capsys)


def test_a_preset_needs_a_tokenizer(workspace, tmp_path, capsys):
    args = ["finetune", "--task", "sst2", "--data", str(workspace[0] / "glue"), "--model"]
    message = run_error([*args, "bert-mini", "--out", str(tmp_path)], capsys)
    assert "--model bert-mini starts from scratch: give --tokenizer DIR" in message


def test_a_tokenizer_of_another_vocabulary_is_refused(workspace, sst2_run, tmp_path, capsys):
    root, checkpoint, _, _ = workspace
    other = train_wordpiece(["zebras quietly graze on the plain"] * 5, min_frequency=1)
    other.save(tmp_path / "other")
    args = [
        "finetune",
        "--task",
        "sst2",
        "--data",
        str(root / "glue"),
        "--model",
        str(checkpoint),
        "--tokenizer",
        str(tmp_path / "other"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert "different vocabularies" in run_error(args, capsys)
    model = tmp_path / "model"
    shutil.copytree(sst2_run[0] / "seed-1", model)
    other.save(model)  # a fine-tuned directory whose tokenizer was swapped
    args = ["evaluate", "--model", str(model), "--data", str(root / "glue")]
    assert "different vocabularies" in run_error(args, capsys)
