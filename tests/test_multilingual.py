"""Language sampling (data/multilingual.py): exact rates, exact sampled counts, the sampled
corpus through `tokenizer train` and `prepare`, and one-line errors for bad corpora."""

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from muppets.cli.main import main
from muppets.data.multilingual import (
    DOCUMENT_LINES,
    multiplicities,
    parse_corpora,
    plan_sampling,
    sampled_documents,
    sampled_paragraphs,
    sampling_rates,
    size_ratios,
)
from muppets.errors import ConfigError, InputError
from muppets.tokenization import load_tokenizer


def test_rates_of_known_sizes_are_the_smoothed_shares():
    # p = (100, 10, 1) / 111; q_i = p_i^0.7 / sum_j p_j^0.7 = 10^(1.4, 0.7, 0) / their sum
    total = 10**1.4 + 10**0.7 + 1
    expected = [10**1.4 / total, 10**0.7 / total, 1 / total]
    np.testing.assert_allclose(sampling_rates([100, 10, 1], 0.7), expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [0.8068830685, 0.1609943379, 0.03212259354], rtol=1e-9)
    # size_ratio = q_i * 111 / size_i: English down, the others up
    np.testing.assert_allclose(
        size_ratios([100, 10, 1], 0.7), [0.8956402, 1.7870371, 3.5656079], rtol=1e-6
    )


def test_alpha_one_is_proportional_and_small_alpha_flattens():
    np.testing.assert_allclose(sampling_rates([300, 100, 100], 1.0), [0.6, 0.2, 0.2], rtol=1e-12)
    np.testing.assert_allclose(size_ratios([300, 100, 100], 1.0), [1, 1, 1], rtol=1e-12)
    flat = sampling_rates([300, 100, 100], 1e-9)
    np.testing.assert_allclose(flat, [1 / 3] * 3, rtol=1e-6)


def test_multiplicities_take_whole_copies_then_a_random_share_once_more():
    times = multiplicities(5, 12, np.random.default_rng(0))
    assert times.sum() == 12 and sorted(times.tolist()) == [2, 2, 2, 3, 3]
    down = multiplicities(10, 3, np.random.default_rng(0))
    assert down.sum() == 3 and set(down.tolist()) == {0, 1}
    again = multiplicities(10, 3, np.random.default_rng(0))
    assert down.tolist() == again.tolist()  # the seed decides


def write_corpora(tmp_path, gz=False):
    """en 100 lines, de 10, zh 1, each line 10 characters: sizes 1000/100/10 characters."""
    paths = {}
    for language, n in (("en", 100), ("de", 10), ("zh", 1)):
        lines = [f"{language}{k:07d}x" for k in range(n)]
        path = tmp_path / f"{language}.txt{'.gz' if gz else ''}"
        text = "\n".join(lines) + "\n"
        if gz:
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        paths[language] = str(path)
    return [f"{language}={path}" for language, path in paths.items()]


def test_sampled_counts_of_known_sizes(tmp_path):
    plans = plan_sampling(write_corpora(tmp_path, gz=True), alpha=0.7, seed=3)
    assert [(p.size, p.unit) for p in plans] == [
        (1000, "characters"),
        (100, "characters"),
        (10, "characters"),
    ]
    # round(ratio * lines): 89.56 -> 90, 17.87 -> 18, 3.566 -> 4
    assert [p.sampled for p in plans] == [90, 18, 4]
    lines = list(sampled_paragraphs(plans))
    counts = Counter(line[:2] for line in lines)
    assert counts == {"en": 90, "de": 18, "zh": 4}
    de = Counter(line for line in lines if line.startswith("de"))
    assert sorted(de.values()) == [1, 1] + [2] * 8  # every line once, 8 of them twice
    assert Counter(lines)["zh0000000x"] == 4
    en = Counter(line for line in lines if line.startswith("en"))
    assert len(en) == 90 and set(en.values()) == {1}  # down-sampled: no line twice
    # prepare's documents hold the same lines, at most DOCUMENT_LINES lines each
    documents = list(sampled_documents(plans))
    assert [s for d in documents for s in d.sentences] == lines
    assert max(len(d.sentences) for d in documents) == DOCUMENT_LINES
    # en: 64 + 26 lines; de: 10, then the 8 taken twice (a second pass); zh: 4 passes of 1
    assert [len(d.sentences) for d in documents] == [64, 26, 10, 8, 1, 1, 1, 1]


def test_sizes_in_another_measure(tmp_path):
    # lines as the size: 100/10/1, the same shares as the characters
    plans = plan_sampling(write_corpora(tmp_path), 0.7, measure=len, unit="lines")
    assert [(p.size, p.unit, p.sampled) for p in plans] == [
        (100, "lines", 90),
        (10, "lines", 18),
        (1, "lines", 4),
    ]


def test_alpha_one_keeps_every_line_once(tmp_path):
    plans = plan_sampling(write_corpora(tmp_path), alpha=1.0)
    assert [p.sampled for p in plans] == [100, 10, 1]
    assert len(set(sampled_paragraphs(plans))) == 111


def test_corpora_parse_and_bad_corpora():
    corpora = parse_corpora(["en=a.txt", "de=b/*.txt", "en=c.txt"])
    assert [(c.language, c.inputs) for c in corpora] == [
        ("en", ("a.txt", "c.txt")),
        ("de", ("b/*.txt",)),
    ]
    assert parse_corpora(["a.txt", "b.txt"]) is None
    with pytest.raises(ConfigError, match=r"inputs: 'b.txt' has no language code"):
        parse_corpora(["en=a.txt", "b.txt"])
    for alpha in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\]"):
            sampling_rates([1, 2], alpha)


def test_a_language_without_text_names_its_file(tmp_path):
    inputs = write_corpora(tmp_path)
    empty = tmp_path / "hi.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"hi.txt: language 'hi' has no text"):
        plan_sampling([*inputs, f"hi={empty}"], alpha=0.7)


def test_commands_sample_languages_and_record_the_rates(tmp_path, capsys):
    inputs = write_corpora(tmp_path, gz=True)
    tok, shards = str(tmp_path / "tok"), str(tmp_path / "shards")
    assert (
        main(["tokenizer", "train", "--inputs", *inputs, "--out", tok, "--vocab-size", "60"]) == 0
    )
    printed = capsys.readouterr().out
    assert "language sampling (alpha 0.7" in printed and "q 0.8069" in printed
    args = ["prepare", "--inputs", *inputs, "--tokenizer", tok, "--out", shards, "--alpha", "1"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["sentences"] == 111  # alpha 1: every line once
    assert manifest["reading"]["language"] == ["en", "de", "zh"]
    record = json.loads((tmp_path / "shards" / "sampling.json").read_text())
    assert record["alpha"] == 1.0
    assert [r["sampled"] for r in record["languages"]] == [100, 10, 1]
    # prepare sizes languages in its tokenizer's tokens: every line once, they are the shards'
    assert {r["unit"] for r in record["languages"]} == {"tokens"}
    assert sum(r["size"] for r in record["languages"]) == manifest["tokens"]
    assert [
        r["rate"] for r in json.loads((tmp_path / "tok" / "sampling.json").read_text())["languages"]
    ] == pytest.approx([0.8068830685, 0.1609943379, 0.03212259354])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--alpha", "0"], "alpha must be in (0, 1]"),
        (["--alpha", "1.2"], "alpha must be in (0, 1]"),
    ],
)
def test_bad_alpha_exits_2(tmp_path, capsys, extra, message):
    inputs = write_corpora(tmp_path)
    assert main(["tokenizer", "train", "--inputs", *inputs, "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_missing_language_code_exits_2(tmp_path, capsys):
    inputs = write_corpora(tmp_path)
    plain = inputs[1].split("=", 1)[1]
    assert main(["tokenizer", "train", "--inputs", inputs[0], plain, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"muppets: error: inputs: {plain!r} has no language code (write LANG=PATH, "
        f"as {inputs[0]!r})"
    )


def test_pretrain_prints_and_records_the_rates_of_its_shards(tmp_path, capsys):
    inputs = write_corpora(tmp_path)
    tok, shards, run = (str(tmp_path / name) for name in ("tok", "shards", "run"))
    assert (
        main(["tokenizer", "train", "--inputs", *inputs, "--out", tok, "--vocab-size", "60"]) == 0
    )
    assert main(["prepare", "--inputs", *inputs, "--tokenizer", tok, "--out", shards]) == 0
    capsys.readouterr()
    args = ["pretrain", "--train-data", shards, "--out", run, "--model", "bert-tiny"]
    args += ["--objective", "mlm", "--max-seq-length", "32", "--batch-size", "4"]
    args += ["--micro-batch-size", "4", "--partitions", "2", "--max-steps", "2"]
    args += ["--warmup-steps", "1", "--eval-every", "0", "--save-every", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("language sampling (alpha 0.7, sizes in tokens)") == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    languages = result["sampling"]["languages"]
    # sizes in tokens, counted here with the tokenizer; lines sampled to round(ratio * lines)
    tokenizer = load_tokenizer(tok)
    sizes = []
    for entry in inputs:
        lines = Path(entry.split("=", 1)[1]).read_text(encoding="utf-8").splitlines()
        sizes.append(sum(map(len, tokenizer.encode_batch(lines))))
    assert [r["size"] for r in languages] == sizes
    ratios = size_ratios(sizes, 0.7)
    expected = [round(r * n) for r, n in zip(ratios, (100, 10, 1), strict=True)]
    assert [r["sampled"] for r in languages] == expected
    for r in languages:
        assert f"  {r['language']:<8} {r['size']:>12,} tok  p {r['share']:.4f}" in printed


def test_a_language_without_text_exits_2_naming_its_file(tmp_path, capsys):
    inputs = write_corpora(tmp_path)
    empty = tmp_path / "hi.txt"
    empty.write_text("\n", encoding="utf-8")
    args = ["tokenizer", "train", "--inputs", *inputs, f"hi={empty}"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"muppets: error: {empty}: language 'hi' has no text"
