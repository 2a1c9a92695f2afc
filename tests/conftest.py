"""Fixtures shared by several test files: the tiny corpus and tokenizer, one torch thread, a CLI
error line, and the two fine-tuning workspaces (task files beside a tiny random BERT or ELMo)."""

import contextlib
import io
import json
import os
import random
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from muppets.cli.main import main
from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.models.registry import build_pretraining_model, preset_config
from muppets.tokenization.wordpiece import train_wordpiece
from muppets.tokenization.words import build_word_vocabulary
from muppets.training.checkpoint import save_pretrained

# "auto" precision asks the CPU (training/precision.py). The tests pin fp32 numbers, so every
# process they start (subprocesses and spawned lanes too, through the environment) sees a CPU
# without bf16 hardware; tests of the bf16 choice fake their own (test_precision_runs.py).
_CPUINFO = Path(tempfile.mkdtemp(prefix="muppets-tests-")) / "cpuinfo"
_CPUINFO.write_text("processor\t: 0\nmodel name\t: test CPU (no bf16)\nflags\t\t: fpu sse2 avx2\n")
os.environ["MUPPETS_CPUINFO"] = str(_CPUINFO)

# Three short sentences, repeated so that every word (and its pieces) passes min_frequency.
TINY_CORPUS = ["the cat sat on the mat .", "a dog ran in the park .", "the sun is hot ."] * 20


@pytest.fixture(scope="module")
def tiny_corpus() -> list[str]:
    return list(TINY_CORPUS)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_corpus):
    """A 60-token WordPiece trained on the tiny corpus: for tiny random checkpoints."""
    return train_wordpiece(tiny_corpus, vocab_size=60, min_frequency=1)


@pytest.fixture(scope="module")
def one_thread():
    """For a test module: one torch thread. Two cores shared with other jobs: one thread is ~10x
    faster than two spinning ones here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_error(capsys):
    """Run the CLI on argv that must fail: exit status 2 and one line on stderr, returned."""

    def run(argv: list[str]) -> str:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("muppets: error: "), err
        return err[0]

    return run


# ---------------------------------------------------------------- fine-tuning a tiny BERT

BERT_TINY = ["--learning-rate", "1e-2", "--pooling", "cls", "--batch-size", "8"]


def finetune_bert(args, capsys):
    code = main(["finetune", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


NOUNS = ["movie", "film", "plot", "actor", "story", "script", "scene", "ending"]
FILLER = ["the", "a", "this", "really", "quite", "very", "was", "is", "and", "so"]
CITIES, PEOPLE = ["paris", "london", "rome"], ["john", "mary", "ada"]
CONTEXT = "{p} lives in {c} . the river in {c} is old and the park is new . {p} likes the park ."


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
        rows = [
            f"{i}\t{sentence(rng, 'so')}\t{sentence(rng, ['bad', 'good', 'so'][i % 3])}\t"
            + nli[i % 3]
            for i in range(12)
        ]
        (mnli / f"{name}.tsv").write_text(
            "index\tsentence1\tsentence2\tgold_label\n" + "\n".join(rows) + "\n"
        )
    reviews = root / "reviews"
    reviews.mkdir()
    for name, n in (("train", 32), ("dev", 8)):
        lines = [
            json.dumps(
                {
                    "review": sentence(rng, "good" if i % 2 else "bad"),
                    "stars": "pos" if i % 2 else "neg",
                }
            )
            for i in range(n)
        ]
        (reviews / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    test = [f"{i}\t{sentence(rng, 'good' if i % 3 else 'bad')}" for i in range(6)]
    (sst / "test.tsv").write_text("index\tsentence\n" + "\n".join(test) + "\n")
    paragraphs = []
    for k in range(6):
        p, c = PEOPLE[k % 3], CITIES[k % 3]
        context = CONTEXT.format(p=p, c=c)
        qas = [
            {
                "id": f"q{k}",
                "question": f"where does {p} live ?",
                "answers": [{"text": c, "answer_start": context.index(c)}],
            }
        ]
        if k == 0:
            qas.append(
                {
                    "id": "q-none",
                    "question": "who owns the moon ?",
                    "answers": [],
                    "is_impossible": True,
                }
            )
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
            lines += [
                f"{p} NNP B-NP B-PER",
                "went VBD B-VP O",
                "to TO B-PP O",
                f"{c} NNP B-NP B-LOC",
                ". . O O",
                "",
            ]
        (conll / f"{name}.txt").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def finetune_workspace(tmp_path_factory):
    """Task files, and a tiny random BERT checkpoint with its WordPiece tokenizer."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    write_tasks(root, rng)
    texts = [sentence(rng, w) for w in ("good", "bad", "so") for _ in range(20)]
    texts += [CONTEXT.format(p=p, c=c) for p in PEOPLE for c in CITIES]
    texts += ["who owns the moon ? where does went to live", ". . ."]
    tokenizer = train_wordpiece(texts, vocab_size=90, min_frequency=1)
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
    return root, checkpoint, tokenizer, config


# ---------------------------------------------------------------- frozen ELMo features

# Small models, a high rate and no dropout: the rules are learnt in a few hundred steps.
ELMO_TINY = (
    ["--batch-size", "8", "--downstream-learning-rate", "1e-2"]
    + ["--downstream-dropout", "0", "--downstream-hidden-size", "16"]
    + ["--embedding-dim", "16", "--device", "cpu"]
    + ["--early-stopping-patience", "0"]
)


def finetune_elmo(args) -> tuple[int, list[str]]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["finetune", *args])
    return code, stdout.getvalue().splitlines()


ELMO_PEOPLE, ELMO_CITIES = ["john", "mary", "ada", "bob"], ["paris", "london", "rome", "oslo"]


def short_sentence(rng, word):
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
    words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


@pytest.fixture(scope="module")
def elmo_workspace(tmp_path_factory):
    """SST-2 (label 1 iff "good"), RTE (entailment iff sentence2 says "good"), a CoNLL NER set,
    and a random elmo-tiny biLM, widened to 64 features and with a char CNN 20x bilm-tf's init,
    so that its frozen features are large enough to learn from in a few steps."""
    root, rng = tmp_path_factory.mktemp("downstream"), random.Random(0)
    sst, rte = root / "glue" / "SST-2", root / "glue" / "RTE"
    sst.mkdir(parents=True), rte.mkdir(parents=True)
    for name, n in (("train", 256), ("dev", 16)):
        rows = [f"{short_sentence(rng, 'good' if i % 2 else 'bad')}\t{i % 2}" for i in range(n)]
        (sst / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        pairs = [
            f"{i}\t{short_sentence(rng, 'so')}\t{short_sentence(rng, 'good' if i % 2 else 'bad')}\t"
            + ("entailment" if i % 2 else "not_entailment")
            for i in range(n)
        ]
        header = "index\tsentence1\tsentence2\tlabel\n"
        (rte / f"{name}.tsv").write_text(header + "\n".join(pairs) + "\n")
    conll = root / "conll"
    conll.mkdir()
    for name, n in (("train", 48), ("valid", 8), ("test", 8)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            p, c = rng.choice(ELMO_PEOPLE), rng.choice(ELMO_CITIES)
            lines += [
                f"{p} NNP B-NP B-PER",
                "went VBD B-VP O",
                "to TO B-PP O",
                f"{c} NNP B-NP B-LOC",
                ". . O O",
                "",
            ]
        (conll / f"{name}.txt").write_text("\n".join(lines))
    elmo = root / "elmo"
    elmo.mkdir()
    vocabulary = build_word_vocabulary({"the": 2, "good": 1})
    vocabulary.save(elmo / "word_vocab.txt")
    config = ElmoConfig(
        **{
            **PRESETS["elmo-tiny"],
            "vocab_size": len(vocabulary),
            "projection_dim": 32,
            "cell_dim": 64,
        }
    )
    torch.manual_seed(0)
    bilm = ElmoBiLM(config)
    with torch.no_grad():
        for conv in bilm.token_encoder.convolutions:
            conv.weight.mul_(20.0)
    save_pretrained(elmo, bilm, config.to_dict(), [elmo / "word_vocab.txt"])
    return root, elmo


# ---------------------------------------------------------------- tiny pretraining shards


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """A 500-token WordPiece and train/valid shards of a slice of the bundled sample (~3 s): for
    runs that must be short (divergence, kill -9, malformed inputs)."""
    samples = Path(__file__).resolve().parents[1] / "muppets" / "samples"
    root = tmp_path_factory.mktemp("tiny-shards")
    lines = (samples / "wiki.train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    end = next(n for n in range(2000, len(lines)) if lines[n].startswith("</doc>")) + 1
    (root / "train.txt").write_text("".join(lines[:end]), encoding="utf-8")
    tok = str(root / "tok")
    text = str(root / "train.txt")
    assert main(["tokenizer", "train", "--inputs", text, "--out", tok, "--vocab-size", "500"]) == 0
    for split, source in (("train", text), ("valid", str(samples / "wiki.valid.txt"))):
        out = str(root / split)
        assert main(["prepare", "--inputs", source, "--tokenizer", tok, "--out", out]) == 0
    return root


@pytest.fixture
def no_hang():
    """A test that runs 60 s fails (SIGALRM) instead of hanging the suite: for code that must
    provably make progress on any input."""

    def expire(*_):
        raise TimeoutError("ran for 60 s: something spins")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def small_hf_sizes(tokenizer, **extra) -> dict:
    """The sizes of a transformers config no preset uses (2 layers, hidden 32, 4 heads, FFN 48)
    over the tokenizer's vocabulary and padding id: the converter tests' models."""
    return dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        pad_token_id=tokenizer.pad_id,
        **extra,
    )
