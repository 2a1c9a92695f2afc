"""ALBERT's pretraining data and objective: n-gram whole-word masking as google-research/albert
draws it (the 6/11, 3/11, 2/11 length law, shorter n-grams at the budget, whole words, 80/10/10
per token), and `muppets pretrain --model albert-tiny --objective mlm+sop` (n-gram masking by
default) with the sentence-order accuracy held out."""

import contextlib
import io
import json
import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import BERT_TINY, write_tasks
from safetensors.torch import load_file

from muppets.cli.main import main
from muppets.data.masking import IGNORE_INDEX, MaskingConfig
from muppets.data.ngram_masking import mask_ngrams, ngram_length_pmf, sample_ngrams
from muppets.training.checkpoint import checkpoints
from muppets.training.pretrained import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

MASK, CLS, SEP = 1, 2, 3
CONFIG = MaskingConfig(vocab_size=100, mask_id=MASK, special_ids=(0, CLS, SEP))


def test_length_law_is_one_over_n():
    assert [Fraction(p).limit_denominator(100) for p in ngram_length_pmf(3)] == [
        Fraction(6, 11),
        Fraction(3, 11),
        Fraction(2, 11),
    ]


def test_drawn_lengths_follow_6_3_2_over_11_over_many_draws():
    """The first n-gram of a row is always taken whole (nothing covered, budget 3 >= n, 400
    one-piece words: clipped at the end only when it starts among the last two)."""
    rng = np.random.default_rng(0)
    sizes, runs = np.ones(400, dtype=np.int64), np.zeros(400, dtype=np.int64)
    drawn, whole = Counter(), 0
    for _ in range(20_000):
        first, taken, n = sample_ngrams(sizes, runs, budget=3, rng=rng)[0]
        drawn[n] += 1
        whole += taken == n
    assert (drawn[1], drawn[2], drawn[3]) == (10_947, 5_328, 3_725)  # seed 0, pinned
    for n, p in zip((1, 2, 3), (6 / 11, 3 / 11, 2 / 11), strict=True):
        assert abs(drawn[n] / 20_000 - p) < 0.01  # 3 standard deviations: 0.0105 at most
    assert whole >= 19_900


def test_an_ngram_over_the_budget_shrinks_and_words_stay_whole():
    """Words of 2 pieces each, budget 5: a drawn 3-gram (6 tokens) is cut to 2 words (4); the
    last token of the budget cannot hold a 2-piece word, so it stays unused."""
    rng = np.random.default_rng(1)
    sizes, runs = np.full(50, 2), np.zeros(50, dtype=np.int64)
    shrunk = 0
    for _ in range(2_000):
        grams = sample_ngrams(sizes, runs, budget=5, rng=rng)
        assert sum(2 * taken for _, taken, _ in grams) <= 5
        assert all(taken <= n for _, taken, n in grams)
        first, taken, n = grams[0]
        shrunk += n == 3
        assert taken == min(n, 2) or first >= 48
    assert shrunk == 359  # seed 1, pinned (about 2/11 of the first draws)


def test_ngrams_never_cross_a_special_token_nor_overlap():
    rng = np.random.default_rng(2)
    sizes = np.ones(12, dtype=np.int64)
    runs = np.array([1] * 5 + [2] * 7)  # [SEP] between word 4 and word 5
    for _ in range(1_000):
        seen = set()
        for first, taken, _ in sample_ngrams(sizes, runs, budget=8, rng=rng):
            words = set(range(first, first + taken))
            assert len({int(runs[w]) for w in words}) == 1 and not words & seen
            seen |= words


def test_mask_ngrams_masks_whole_words_with_80_10_10_per_token():
    """Token ids >= 50 are "##" continuations. Over many rows: every word is wholly chosen or not
    at all; the budget (15% of 41 = 6) is never exceeded; [MASK]/kept/random ~ 80/10/10 per
    token, so a multi-token n-gram is sometimes mixed (SpanBERT's one choice per span never is)."""
    continuation = np.arange(100) >= 50
    rng = np.random.default_rng(3)
    row_rng = np.random.default_rng(4)
    outcomes, mixed = Counter(), 0
    for _ in range(400):
        body = row_rng.integers(4, 100, size=38)
        tokens = np.array([CLS, *body[:20], SEP, *body[20:], SEP])
        ids, labels = mask_ngrams(tokens, rng, CONFIG, continuation)
        chosen = labels != IGNORE_INDEX
        assert np.array_equal(labels[chosen], tokens[chosen])
        assert 1 <= chosen.sum() <= 6 and not chosen[[0, 21, 40]].any()
        for i in range(1, len(tokens)):  # a continuation is chosen iff its word start is
            if continuation[tokens[i]] and tokens[i - 1] not in (CLS, SEP):
                assert chosen[i] == chosen[i - 1]
        kind = np.where(ids == MASK, 0, np.where(ids == tokens, 1, 2))[chosen]
        outcomes.update(kind.tolist())
        mixed += len(set(kind.tolist())) > 1
    total = sum(outcomes.values())
    assert abs(outcomes[0] / total - 0.8) < 0.03 and abs(outcomes[1] / total - 0.1) < 0.03
    assert mixed > 50


def test_mask_ngrams_is_a_pure_function_of_the_generator():
    tokens = np.array([CLS, *range(10, 40), SEP])
    continuation = np.zeros(100, dtype=bool)
    a = mask_ngrams(tokens, np.random.default_rng(5), CONFIG, continuation)
    b = mask_ngrams(tokens, np.random.default_rng(5), CONFIG, continuation)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert tokens.tolist() == [CLS, *range(10, 40), SEP]  # the input is not written to


def test_pretrain_albert_tiny_mlm_sop_holds_out_sop_accuracy_and_fine_tunes(
    tiny_shards, tmp_path, capsys
):
    out = tmp_path / "albert"
    args = ["pretrain", "--train-data", str(tiny_shards / "train")]
    args += ["--valid-data", str(tiny_shards / "valid"), "--out", str(out)]
    args += ["--model", "albert-tiny", "--objective", "mlm+sop"]  # n-gram masking: the default
    args += ["--max-seq-length", "64", "--batch-size", "8", "--micro-batch-size", "4"]
    args += ["--partitions", "2", "--warmup-steps", "2", "--log-every", "2", "--eval-every", "0"]
    args += ["--save-every", "3", "--eval-instances", "16", "--max-steps", "3"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["masking"] == "ngram"
    scores = result["eval"]
    assert {"mlm_accuracy", "sop_accuracy", "sop_loss"} <= set(scores)
    assert scores["sop_accuracy"] in {k / 16 for k in range(17)}  # 16 held-out pairs
    saved = checkpoints(out / "checkpoints")[-1]
    config = json.loads((saved / "config.json").read_text())
    assert (config["model_type"], config["embedding_size"], config["num_hidden_groups"]) == (
        "albert",
        64,
        1,
    )
    weights = load_file(saved / "model.safetensors")
    groups = {k.split(".layers.")[1].split(".")[1] for k in weights if ".groups." in k}
    assert groups == {"0"}  # one shared layer, however deep
    assert weights["mlm_head.dense.weight"].shape == (64, 128)  # H -> E before the decoder
    assert torch.isfinite(weights["pair_head.linear.weight"]).all()

    # to transformers and back: AlbertForPreTraining's logits; its WordPiece tokenizer travels
    # as a BertTokenizer (tokenizer_config.json), which an ALBERT directory may then hold
    import transformers

    hf, back = tmp_path / "hf", tmp_path / "back"
    assert main(["convert", "--input", str(out), "--out", str(hf), "--to", "hf"]) == 0
    assert main(["convert", "--input", str(hf), "--out", str(back), "--to", "muppets"]) == 0
    theirs = transformers.AlbertForPreTraining.from_pretrained(hf).eval()
    ours = load_checkpoint(back)
    assert type(transformers.AutoTokenizer.from_pretrained(hf)).__name__.startswith("Bert")
    ids = torch.tensor([ours.tokenizer.encode_pair("the river is old", "it was built")[0]])
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[0, 2:5] = True
    with torch.no_grad():
        expected = theirs(input_ids=ids)
        got = ours.model(ids, None, None, masked)
    assert (got.mlm_logits - expected.prediction_logits[masked]).abs().max() < 1e-5
    assert (got.pair_logits - expected.sop_logits).abs().max() < 1e-5

    # the run fine-tunes through the project's task heads, its shared layers and all
    rng = random.Random(0)
    write_tasks(tmp_path, rng)
    tuned = tmp_path / "sst2"
    args = ["--task", "sst2", "--data", str(tmp_path / "glue"), "--model", str(out)]
    args += ["--out", str(tuned), "--epochs", "1", "--early-stopping-patience", "0", *BERT_TINY]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["finetune", *args]) == 0
    tuned_weights = load_file(tuned / "seed-1" / "model.safetensors")
    assert not torch.equal(
        tuned_weights["encoder.layers.groups.0.layers.0.attention.qkv.weight"],
        weights["encoder.layers.groups.0.layers.0.attention.qkv.weight"],
    )
    score = json.loads((tuned / "seed-1" / "metrics.json").read_text())["score"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tuned), "--data", str(tmp_path / "glue")]) == 0
    precision, scores = capsys.readouterr().out.strip().splitlines()  # the arithmetic, first
    assert precision.startswith("precision: ")
    assert scores == f"sst2 dev (16 examples): accuracy {score:.4f}"
