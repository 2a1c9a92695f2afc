"""One error path for everything: every subcommand over the malformed inputs of tests/malformed/
(make.py writes them) and over shards and checkpoints corrupted here ends with exit status 2 and
one stderr line that names the file (and line) or the field, under a 60 s alarm. Any other end (a
traceback, exit 1, several lines, a hang) is a bug in the module at fault."""

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from muppets.cli.main import main

M = Path(__file__).resolve().parent / "malformed"
ODD = ("array.jsonl", "stray_close.txt")  # plain text unless --format says otherwise
TEXT = sorted(p.name for p in (M / "text").iterdir() if p.name not in ODD)
CONFIGS = sorted(p.name for p in (M / "config").iterdir())


def case(argv: str, expect: str, *marks) -> object:
    """argv with {placeholders} (fixture paths); `expect`: a substring of the error line."""
    return pytest.param(argv, expect, id=f"{argv[:60]}", marks=marks)


def tune(task: str, folder: str, name: str) -> object:
    """finetune with a malformed file as both train and dev file."""
    path = f"{{m}}/{folder}/{name}"
    return case(f"finetune --task {task} --train-file {path} --dev-file {path} {{ft}}", name)


CASES = [
    # tokenizer train: each bad corpus, and bad options
    *[case(f"tokenizer train --inputs {{m}}/text/{n} --out {{o}}/tok", n) for n in TEXT],
    case("tokenizer train --inputs {m}/nope.txt --out {o}/tok", "nope.txt"),
    case("tokenizer train --inputs {m}/text/array.jsonl --format jsonl --out {o}/t", "array.jsonl"),
    case("tokenizer train --inputs {m}/text/stray_close.txt --format wiki --out {o}/t", "close"),
    case("tokenizer train --inputs {m}/text --out {o}/tok", "text"),
    case("tokenizer train --inputs {m}/text/*.none --out {o}/tok", "*.none"),
    case("tokenizer train --inputs {sample} --out {exists}", "exists.txt"),
    case("tokenizer train --inputs {sample} --out {o}/tok --vocab-size 0", "vocab_size"),
    case("tokenizer train --inputs {sample} --out {o}/tok --format xml", "format"),
    case("tokenizer train --inputs {sample} --out {o}/tok --errors ignore", "errors"),
    # prepare
    *[case(f"prepare --inputs {{m}}/text/{n} --tokenizer {{tok}} --out {{o}}/p", n) for n in TEXT],
    case("prepare --inputs {sample} --tokenizer {m}/nope --out {o}/p", "nope"),
    case(
        "prepare --inputs {m}/text/array.jsonl --format jsonl --tokenizer {tok} --out {o}/p",
        "array",
    ),
    case("prepare --inputs {sample} --tokenizer {m}/text --out {o}/p", "text"),
    case("prepare --inputs {sample} --tokenizer {m}/text/latin1.txt --out {o}/p", "latin1.txt"),
    case("prepare --inputs {sample} --tokenizer {tok} --out {exists}", "exists.txt"),
    case(
        "prepare --inputs {sample} --tokenizer {tok} --out {o}/p --shard-tokens 0", "shard_tokens"
    ),
    # pretrain: corrupted shards, bad options and configs, bad resumes
    *[
        case(f"pretrain --train-data {{bad_shards}}/{n} --out {{o}}/r {{small}}", n)
        for n in ("zeroed", "big_ids", "manifest", "no_shard", "short_offsets", "no_tokenizer")
    ],
    case(
        "pretrain --train-data {train} --valid-data {bad_shards}/big_ids --out {o}/r {small}", "big"
    ),
    case("pretrain --train-data {train} --out {o}/r {small} --model bert-nope", "bert-nope"),
    case("pretrain --train-data {train} --out {o}/r {small} --objective mlm+xyz", "objective"),
    case(
        "pretrain --train-data {train} --out {o}/r {small} --max-seq-length 9999", "max_seq_length"
    ),
    case("pretrain --train-data {train} --out {o}/r {small} --masking nope", "masking"),
    case("pretrain --train-data {train} --out {o}/r {small} --micro-batch-size 3", "batch_size"),
    case("pretrain --train-data {train} --out {o}/r {small} --learning-rate -1", "learning_rate"),
    case("pretrain --train-data {train} --out {o}/r {small} --time-budget soon", "soon"),
    case("pretrain --train-data {train} --out {o}/r {small} --init-from {m}/nope", "nope"),
    case(
        "pretrain --train-data {train} --out {o}/r {small} --init-from {bad_ckpt}/config", "config"
    ),
    case("pretrain --train-data {train} --out {o}/r {small} --resume", "nothing to resume"),
    case("pretrain --train-data {train} --out {bad_run} {small} --resume", "trainer_state.json"),
    *[
        case(
            f"pretrain --train-data {{train}} --out {{o}}/r {{small}} --config {{m}}/config/{n}", n
        )
        for n in CONFIGS
    ],
    # pretrain-elmo
    *[case(f"pretrain-elmo --train-data {{m}}/text/{n} --out {{o}}/e {{elmo}}", n) for n in TEXT],
    case("pretrain-elmo --train-data {m}/text/array.jsonl --format jsonl --out {o}/e", "array"),
    case("pretrain-elmo --train-data {sample} --valid-data {m}/nope.txt --out {o}/e", "nope.txt"),
    case("pretrain-elmo --train-data {sample} --out {o}/e --model elmo-nope", "elmo-nope"),
    case("pretrain-elmo --train-data {sample} --out {o}/e --window 0", "window"),
    # finetune: each task reader over its bad files
    *[
        tune("sst2", "table", n)
        for n in ("latin1.tsv", "empty.tsv", "header_only.tsv", "no_label_column.tsv")
        + ("no_text_column.tsv", "empty_text.tsv", "ragged.tsv", "unknown_label.tsv")
    ],
    *[
        tune("stsb", "table", n)
        for n in ("bad_label_stsb.tsv", "range_stsb.tsv", "word_label_stsb.tsv")
    ],
    *[
        tune("tabular", "table", n)
        for n in ("null_text.jsonl", "mixed_labels.jsonl", "bad.jsonl", "list_row.jsonl")
        + ("missing_key.jsonl", "quote.csv", "latin1.csv", "empty.tsv", "latin1.tsv")
    ],
    *[tune("squad", "squad", n) for n in sorted(p.name for p in (M / "squad").iterdir())],
    *[tune("conll2003", "conll", n) for n in sorted(p.name for p in (M / "conll").iterdir())],
    case("finetune --task sst2 --train-file {m}/nope.tsv --dev-file {m}/nope.tsv {ft}", "nope.tsv"),
    case("finetune --task nope --data {m} {ft}", "nope"),
    case("finetune --task sst2 --data {m}/nope {ft}", "nope"),
    case("finetune --task sst2 --data {m}/table --model {m}/nope --out {o}/f", "nope"),
    case("finetune --task sst2 --data {m}/table --model {bad_ckpt}/config --out {o}/f", "config"),
    case("finetune --task sst2 --data {m}/table {ft} --seeds a,b", "seeds"),
    case("finetune --task sst2 --data {m}/table {ft} --batch-size x", "batch_size"),
    case("finetune --task sst2 --data {m}/table {ft} --train-sizes -3", "train_sizes"),
    case("finetune --task sst2 --data {m}/table {ft} --pooling nope", "pooling"),
    case("finetune --task sst2 --data {m}/table {ft} --downstream nope", "downstream"),
    # evaluate and predict with a fine-tuned model
    *[
        case(f"evaluate --model {{tuned}} --file {{m}}/table/{n}", n)
        for n in ("latin1.tsv", "empty.tsv", "header_only.tsv", "no_label_column.tsv")
        + ("empty_text.tsv", "ragged.tsv", "unknown_label.tsv")
    ],
    case("evaluate --model {tuned} --file {m}/nope.tsv", "nope.tsv"),
    case("evaluate --model {tuned} --data {m}/nope", "nope"),
    case("evaluate --model {ckpt} --file {m}/table/latin1.tsv", "fine-tuned"),
    case("evaluate --model {m}/nope --file {m}/table/latin1.tsv", "nope"),
    case("evaluate --model {tuned} --file {m}/conll/latin1.txt --task conll", "conll"),
    *[
        case(f"predict --model {{tuned}} --input {{m}}/table/{n} --out {{o}}/p.tsv", n)
        for n in ("latin1.tsv", "empty.tsv", "empty_text.tsv", "ragged.tsv")
    ],
    case("predict --model {tuned} --input {m}/nope.tsv --out {o}/p.tsv", "nope.tsv"),
    case("predict --model {tuned} --input {good} --out {o}", "out"),
    case("predict --model {bad_ckpt}/config --input {m}/table/latin1.tsv --out {o}/p", "config"),
    # predict fill-mask
    case("predict fill-mask --model {ckpt} no_mask_here", "[MASK]"),
    case("predict fill-mask --model {ckpt} {long}", "positions"),
    case("predict fill-mask --model {ckpt} [MASK] --top-k 0", "top_k"),
    case("predict fill-mask --model {m}/nope [MASK]", "nope"),
    *[
        case(f"predict fill-mask --model {{bad_ckpt}}/{n} [MASK]", n)
        for n in ("config", "no_weights", "truncated", "pickle", "unknown_type", "wrong_shape")
    ],
    # extract
    case("extract --model {ckpt} --input {m}/text/latin1.txt --out {o}/f.npz", "latin1.txt"),
    case("extract --model {ckpt} --input {m}/text/nul.txt --out {o}/f.npz", "nul.txt"),
    case("extract --model {ckpt} --input {m}/nope.txt --out {o}/f.npz", "nope.txt"),
    case("extract --model {ckpt} --input {sample} --out {o}/f.txt", "out"),
    case("extract --model {ckpt} --input {sample} --out {o}/f.npz --layers some", "layers"),
    *[
        case(f"extract --model {{bad_ckpt}}/{n} --input {{sample}} --out {{o}}/f.npz", n)
        for n in ("config", "no_weights", "truncated", "pickle", "unknown_type", "wrong_shape")
    ],
    # convert
    *[
        case(f"convert --input {{bad_ckpt}}/{n} --out {{o}}/c", n)
        for n in ("config", "no_weights", "truncated", "pickle", "unknown_type", "wrong_shape")
    ],
    case("convert --input {ckpt} --out {o}/c --to onnx", "to"),
    case("convert --input {ckpt} --out {exists}", "exists.txt"),
    # quickstart options
    case("quickstart --out {o}/q --budget soon", "soon"),
    case("quickstart --out {o}/q --data-dir {m}/nope", "nope"),
    case("quickstart --out {o}/q --data-dir {m}/text", "text"),
    case("quickstart --out {o}/q --label-budgets x", "label_budgets"),
    case("quickstart --out {o}/q --bert-model bert-nope", "bert-nope"),
    case("quickstart --out {o}/q --config {m}/config/syntax.toml", "syntax.toml"),
]

SMALL = "--model bert-tiny --max-seq-length 32 --batch-size 4 --micro-batch-size 4 --partitions 1"
SMALL += " --warmup-steps 0 --max-steps 2 --eval-instances 8"
ELMO = "--model elmo-tiny --max-steps 2 --warmup-steps 0 --batch-size 2 --micro-batch-size 2"


@pytest.fixture(scope="module")
def paths(tiny_shards, tmp_path_factory):
    """The placeholders: a 1-step checkpoint, a fine-tuned model, corrupted copies of both."""
    root = tmp_path_factory.mktemp("malformed")
    run = root / "run"
    argv = f"pretrain --train-data {tiny_shards / 'train'} --out {run} {SMALL} --save-every 1"
    assert main(argv.split()) == 0
    ckpt = run / "checkpoints" / "step-00000002"
    data = root / "sst2"
    data.mkdir()
    rows = "".join(f"the cat sat {'well' if n % 2 else 'badly'} .\t{n % 2}\n" for n in range(8))
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    tuned = root / "tuned"
    argv = f"finetune --task sst2 --data {data} --model {ckpt} --out {tuned} --epochs 1"
    assert main([*argv.split(), "--batch-size", "4", "--learning-rate", "1e-3"]) == 0
    return {
        "m": M,
        "tok": tiny_shards / "tok",
        "train": tiny_shards / "train",
        "sample": M / "make.py",  # any readable text file
        "ckpt": ckpt,
        "tuned": tuned,
        "good": data / "dev.tsv",
        "ft": f"--model {ckpt} --out {{o}}/f --epochs 1",
        "small": SMALL,
        "elmo": ELMO,
        "long": " ".join(["cat"] * 600) + " [MASK]",
        "bad_shards": bad_shards(tiny_shards / "train", root / "bad-shards"),
        "bad_ckpt": bad_checkpoints(ckpt, root / "bad-ckpt"),
        "bad_run": bad_run(run, root / "bad-run"),
    }


def bad_shards(good: Path, root: Path) -> Path:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, root / name))

    docs = copy("zeroed") / "shard-00000-documents.bin"
    docs.write_bytes(bytes(docs.stat().st_size))
    tokens = copy("big_ids") / "shard-00000-tokens.bin"
    ids = np.fromfile(tokens, dtype=np.uint16)
    ids[5] = 60_000
    ids.tofile(tokens)
    (copy("manifest") / "manifest.json").write_text("{not json", encoding="utf-8")
    (copy("no_shard") / "shard-00000-tokens.bin").unlink()
    sentences = copy("short_offsets") / "shard-00000-sentences.bin"
    sentences.write_bytes(sentences.read_bytes()[:-8])
    (copy("no_tokenizer") / "tokenizer.json").unlink()
    (root / "no_tokenizer" / "vocab.txt").unlink()
    return root


def bad_checkpoints(good: Path, root: Path) -> Path:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, root / name))

    (copy("config") / "config.json").write_text('{"model_type": ', encoding="utf-8")
    (copy("no_weights") / "model.safetensors").unlink()
    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (copy("pickle") / "model.safetensors").unlink()
    (root / "pickle" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    config = copy("unknown_type") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "gpt9"}))
    config = copy("wrong_shape") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 32}))
    return root


def bad_run(good: Path, root: Path) -> Path:
    """A run whose newest checkpoint's trainer_state.json has lost its "ranks"."""
    shutil.copytree(good, root)
    state = root / "checkpoints" / "step-00000002" / "trainer_state.json"
    saved = json.loads(state.read_text())
    del saved["ranks"]
    state.write_text(json.dumps(saved))
    return root


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer within 60 s")


@pytest.mark.parametrize("argv, expect", CASES)
def test_a_malformed_input_is_one_line_and_exit_2(
    paths, tmp_path, capsys, one_thread, argv, expect
):
    (tmp_path / "exists.txt").write_text("mine")
    values = {**paths, "o": tmp_path, "exists": tmp_path / "exists.txt", "long": "LONG"}
    text = argv.format(**values)
    args = [paths["long"] if a == "LONG" else a for a in text.format(o=tmp_path).split()]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, (code, err)
    assert err[0].startswith("muppets: error: ") and expect in err[0], err[0]


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100
