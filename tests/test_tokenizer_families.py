"""Every tokenizer family against the transformers fast tokenizer that reads the same file.

For each style (BERT WordPiece, RoBERTa byte-level BPE, ALBERT and XLNet SentencePiece unigram)
a vocabulary is trained here on the bundled sample plus some FLORES-200 lines (read in place from
../shared/data/multilingual, CC BY-SA 4.0, never copied), saved, and read back by AutoTokenizer and
by the family's class with tokenizer_file=: ids, special tokens, pair templates, token_type_ids and
offsets must be equal on the sample's held-out lines and on other FLORES lines in 8 languages.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

from muppets.cli.main import main
from muppets.data.masking import MaskingConfig, mask_whole_words
from muppets.errors import InputError
from muppets.tokenization.bpe import BPETokenizer
from muppets.tokenization.families import load_any_tokenizer, style_for, train_any
from muppets.tokenization.styles import STYLES
from muppets.tokenization.unigram import UnigramTokenizer
from muppets.tokenization.wordpiece import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "muppets" / "samples"
FLORES = ROOT.parent / "shared" / "data" / "multilingual" / "flores200-devtest"
LANGUAGES = ("arb_Arab", "deu_Latn", "eng_Latn", "hin_Deva", "rus_Cyrl", "spa_Latn", "tur_Latn")
LANGUAGES += ("zho_Hans",)
CLASSES = {
    "bert": (transformers.BertTokenizerFast, WordPieceTokenizer),
    "roberta": (transformers.RobertaTokenizerFast, BPETokenizer),
    "albert": (transformers.AlbertTokenizerFast, UnigramTokenizer),
    "xlnet": (transformers.XLNetTokenizerFast, UnigramTokenizer),
}


def lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        text = [line.strip() for line in f]
    return [line for line in text if line and not line.startswith(("<doc", "</doc>"))]


def flores(start: int, stop: int) -> list[str]:
    if not FLORES.is_dir():
        return []
    return [line for lang in LANGUAGES for line in lines(FLORES / f"{lang}.devtest")[start:stop]]


TRAIN = lines(SAMPLE / "wiki.train.txt")[:600] + flores(0, 100)
VALID = lines(SAMPLE / "wiki.valid.txt")[:60] + flores(900, 930)


@pytest.fixture(scope="module", params=list(CLASSES))
def family(request, tmp_path_factory):
    """(style name, our tokenizer, its saved directory)."""
    tokenizer = train_any(STYLES[request.param], TRAIN, vocab_size=1200, min_frequency=1)
    directory = tmp_path_factory.mktemp(request.param)
    tokenizer.save(directory)
    return request.param, tokenizer, directory


def references(name: str, directory: Path):
    cls = CLASSES[name][0]
    yield transformers.AutoTokenizer.from_pretrained(directory)
    yield cls(tokenizer_file=str(directory / "tokenizer.json"))


def test_ids_templates_segments_and_offsets_equal_the_transformers_fast_tokenizer(family):
    name, ours, directory = family
    assert FLORES.is_dir(), "the multilingual lines are part of the parity check"
    first, second = VALID[:-1], VALID[1:]
    singles = [ours.backend.encode(a) for a in VALID]
    pairs = [ours.backend.encode(a, b) for a, b in zip(first, second, strict=True)]
    for reference in references(name, directory):
        assert isinstance(reference, CLASSES[name][0])
        ids = [ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id]
        expected = [reference.pad_token_id, reference.unk_token_id, reference.cls_token_id]
        assert ids == [*expected, reference.sep_token_id, reference.mask_token_id]
        options = {"return_token_type_ids": True, "return_offsets_mapping": True}
        single = reference(VALID, **options)
        assert [e.ids for e in singles] == single["input_ids"]
        assert [e.offsets for e in singles] == [
            list(map(tuple, o)) for o in single["offset_mapping"]
        ]
        pair = reference(first, second, **options)
        assert [e.ids for e in pairs] == pair["input_ids"]
        assert [e.type_ids for e in pairs] == pair["token_type_ids"]
        assert [e.offsets for e in pairs] == [list(map(tuple, o)) for o in pair["offset_mapping"]]
        plain = reference(VALID, add_special_tokens=False)["input_ids"]
        assert ours.encode_batch(VALID) == plain
        # Templates built from ids (task features) equal the tokenizer's own.
        for a, b, encoding in zip(plain[:-1], plain[1:], pairs, strict=True):
            assert ours.build_inputs(a, b) == (encoding.ids, encoding.type_ids)
        masked = f"{VALID[0][:20]} {ours.special_tokens[4]} end"
        assert ours.encode_pair(masked)[0] == reference(masked)["input_ids"]


def test_each_template_puts_the_specials_where_its_family_does(family):
    name, ours, _ = family
    a, b = [10, 11], [12]
    cls, sep = ours.cls_id, ours.sep_id
    expected = {
        "bert": ([cls, 10, 11, sep, 12, sep], [0, 0, 0, 0, 1, 1]),
        "albert": ([cls, 10, 11, sep, 12, sep], [0, 0, 0, 0, 1, 1]),
        "roberta": ([cls, 10, 11, sep, sep, 12, sep], [0] * 7),  # <s> A </s></s> B </s>
        "xlnet": ([10, 11, sep, 12, sep, cls], [0, 0, 0, 1, 1, 2]),  # <cls> last, segment 2
    }[name]
    assert ours.build_inputs(a, b) == expected
    assert ours.num_special_tokens(pair=True) == len(expected[0]) - 3
    assert ours.num_special_tokens() == 2


def test_each_family_reads_back_as_its_class_with_the_same_fingerprint(family):
    name, ours, directory = family
    loaded = load_any_tokenizer(directory)
    assert type(loaded) is CLASSES[name][1]
    assert loaded.fingerprint() == ours.fingerprint()
    assert loaded.encode_batch(VALID) == ours.encode_batch(VALID)
    assert loaded.template == STYLES[name].template


def test_word_starts_follow_each_family_marker(family):
    """Whole-word masking units: on text of letters and spaces, a piece continues a word exactly
    when the backend puts it in the same word as the piece before ("##" pieces for WordPiece,
    pieces without "Ġ" / "▁" for byte-level BPE and SentencePiece)."""
    name, ours, _ = family
    continuation = ours.continuation_mask()
    assert (
        continuation.shape == (ours.vocab_size,) and not continuation[list(ours.special_ids)].any()
    )
    letters = ("".join(c if c.isalpha() else " " for c in line) for line in VALID[:40])
    texts = [" ".join(text.split()) for text in letters]  # words and single spaces
    for encoding in ours.backend.encode_batch(texts, add_special_tokens=False):
        words = np.array(encoding.word_ids)
        same_word = np.concatenate(([False], words[1:] == words[:-1]))
        # A text's first piece starts its word whatever it is: a special token comes before it.
        assert (continuation[encoding.ids][1:] == same_word[1:]).all()
    # The whole-word masker takes every piece of a word or none of it.
    ids = np.array(ours.build_inputs(ours.encode(texts[0]))[0])
    config = MaskingConfig(ours.vocab_size, ours.mask_id, tuple(ours.special_ids), 0.3)
    _, labels = mask_whole_words(ids, np.random.default_rng(0), config, continuation)
    chosen = labels != -100
    starts = ~continuation[ids] | np.isin(ids, list(ours.special_ids))
    word = np.cumsum(starts)
    for w in np.unique(word[chosen]):
        assert chosen[word == w].all()


def test_known_word_starts_of_each_marker():
    bpe = train_any(STYLES["roberta"], TRAIN[:200], vocab_size=600, min_frequency=1)
    vocab = bpe.backend.get_vocab()
    mask = bpe.continuation_mask()
    assert not mask[vocab["\u0120t"]] and mask[vocab["t"]]  # "Ġt" starts, "t" continues
    assert not mask[vocab[","]] and not mask[bpe.cls_id]  # punctuation starts a word


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_training_gives_the_same_tokenizer_in_every_process(kind, tmp_path):
    """The Unigram trainer's scores and the order of equal-score pieces changed from process to
    process (5 processes, 5 vocabularies before the fix), and so did the ids of the rare
    characters it adds at the end (the FLORES lines bring them); BPE's never did. Four must
    agree."""
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(TRAIN[:300] + flores(300, 302)))
    script = (
        "import json, sys; from muppets.tokenization.families import train_any, style_for; "
        "t = train_any(style_for(sys.argv[2]), json.load(open(sys.argv[1])), 500, min_frequency=1)"
        "; print(t.backend.to_str())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script, str(corpus), kind],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(4)
    }
    assert len(runs) == 1 and len(json.loads(runs.pop())["added_tokens"]) == 5


def test_style_follows_the_model_type_and_kind():
    assert style_for("auto") is STYLES["bert"]
    assert style_for("auto", "roberta") is STYLES["roberta"]
    assert style_for("auto", "xlnet") is STYLES["xlnet"]
    assert style_for("unigram") is STYLES["albert"]
    assert style_for("unigram", "xlnet") is STYLES["xlnet"]
    assert style_for("bpe", "bert") is STYLES["roberta"]  # the kind wins over the model type


def test_an_unknown_model_type_is_one_line_naming_the_file(tmp_path, capsys):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json")
    )
    with pytest.raises(InputError, match="model type 'WordLevel' is not read here"):
        load_any_tokenizer(tmp_path)
    args = ["prepare", "--inputs", str(SAMPLE / "wiki.valid.txt"), "--tokenizer", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "tokenizer.json") in err
    assert "WordLevel" in err


def test_a_vocabulary_with_a_gap_or_a_shared_id_is_refused():
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    from muppets.tokenization.backend import BackendTokenizer

    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    good = {t: i for i, t in enumerate(specials + ("a",))}
    tokenizer = BackendTokenizer(Tokenizer(WordPiece(good, unk_token="[UNK]")), specials)
    assert tokenizer.id_to_token(5) == "a" and tokenizer._tokens == [*specials, "a"]
    for vocab in ({**good, "a": 6}, {**good, "a": 4}):  # a gap at 5; "a" on [MASK]'s id
        with pytest.raises(InputError, match="not 0..N-1 without gaps"):
            BackendTokenizer(Tokenizer(WordPiece(vocab, unk_token="[UNK]")), specials, "v.json")


def test_the_model_type_is_read_whatever_the_key_order(family, tmp_path):
    """tokenizer_model scans for `"model": {"type": ...` (what tokenizers writes); a file with
    the model's keys in another order is parsed instead, and gives the same type."""
    from muppets.tokenization.families import tokenizer_model

    _, ours, directory = family
    want = type(ours.backend.model).__name__
    assert tokenizer_model(directory) == want
    state = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    model = state.pop("model")
    state["model"] = {**{k: v for k, v in model.items() if k != "type"}, "type": model["type"]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    assert tokenizer_model(tmp_path) == want


def test_task_features_use_each_family_template(family):
    """Fine-tuning inputs equal the transformers tokenizer's own pair encoding (RoBERTa's
    <s> a </s></s> b </s>, XLNet's <cls> last), and a QA window's answer lands on its tokens."""
    from muppets.data.readers.squad import QAExample
    from muppets.data.readers.tabular import Example
    from muppets.data.task_features import classification_features, qa_features

    name, ours, directory = family
    reference = CLASSES[name][0](tokenizer_file=str(directory / "tokenizer.json"))
    pairs = enumerate(zip(VALID[:8], VALID[1:9], strict=True))
    examples = [Example(a, b, 0, str(i), "x", i) for i, (a, b) in pairs]
    features = classification_features(examples, ours, max_seq_length=48)
    expected = reference(
        VALID[:8], VALID[1:9], truncation="longest_first", max_length=48, return_token_type_ids=True
    )
    assert [f.input_ids.tolist() for f in features] == expected["input_ids"]
    assert [f.token_type_ids.tolist() for f in features] == expected["token_type_ids"]
    context = next(line for line in VALID if len(line.split()) > 30)
    answer = next(w for w in context.split()[5:] if w.isalpha() and len(w) > 3)
    start = context.index(f" {answer}") + 1
    example = QAExample("q", VALID[3][:40], context, [(answer, start)], [answer], False, "x", 1)
    feature = qa_features([example], ours, max_seq_length=256, doc_stride=64)[0]
    s, e = feature.targets["start_positions"], feature.targets["end_positions"]
    if name != "xlnet":  # XLNet puts its <cls> last; its QA head is not built here
        assert s > 0 and ours.decode(feature.input_ids[s : e + 1].tolist()).strip() in (
            answer,
            answer.lower(),
        )


def test_a_roberta_trains_its_byte_level_bpe_then_prepares_and_pretrains(tmp_path):
    """`tokenizer train --model roberta-mini` picks byte-level BPE; prepare and two whole-word
    masked pretraining steps run on it; the checkpoint reads back with the same tokenizer."""
    from muppets.data.shards import ShardedCorpus
    from muppets.training.pretrained import load_pretrained

    tok, shards, run = (str(tmp_path / name) for name in ("tok", "shards", "run"))
    inputs = ["--inputs", str(SAMPLE / "wiki.valid.txt")]
    train = ["tokenizer", "train", *inputs, "--out", tok, "--vocab-size", "800"]
    assert main([*train, "--model", "roberta-mini"]) == 0
    tokenizer = load_any_tokenizer(tok)
    assert isinstance(tokenizer, BPETokenizer) and (tokenizer.cls_id, tokenizer.pad_id) == (0, 1)
    assert main(["prepare", *inputs, "--tokenizer", tok, "--out", shards]) == 0
    corpus = ShardedCorpus(shards)
    corpus.check_tokenizer(tokenizer.fingerprint())
    args = ["pretrain", "--train-data", shards, "--out", run, "--model", "roberta-mini"]
    args += [
        "--max-seq-length",
        "32",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "4",
        "--partitions",
        "2",
    ]
    args += ["--max-steps", "2", "--warmup-steps", "1", "--eval-every", "0", "--save-every", "2"]
    assert main([*args, "--masking", "whole_word", "--objective", "mlm"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert np.isfinite(result["train_loss"]) and result["config"]["masking"] == "whole_word"
    _, config, loaded = load_pretrained(run)
    assert isinstance(loaded, BPETokenizer) and loaded.fingerprint() == tokenizer.fingerprint()
    assert (config.model_type, config.pad_token_id, config.vocab_size) == ("roberta", 1, 800)


def test_prepare_shards_hold_each_sentence_ids_in_every_family(family, tmp_path):
    """prepare encodes a document's sentences as one string joined by the separator token and
    cuts the ids there (byte-level BPE: one string per sentence, cheaper there); the shards, and
    the joined path in every family, must equal tokenizing each sentence alone."""
    from muppets.data.document_ids import DocumentEncoder
    from muppets.data.prepare import PrepareConfig, prepare_corpus
    from muppets.data.shards import ShardedCorpus
    from muppets.data.text import read_documents

    _, ours, directory = family
    files = [str(SAMPLE / "wiki.valid.txt"), str(FLORES / "zho_Hans.devtest")]
    files += [str(FLORES / "hin_Deva.devtest")]
    encoder = DocumentEncoder(ours, files)
    assert encoder.joined == (ours.kind != "bpe")
    prepare_corpus(PrepareConfig(files, str(directory), str(tmp_path / "shards")))
    corpus = ShardedCorpus(tmp_path / "shards")
    documents = list(read_documents(files))
    assert len(corpus) == len(documents)
    want = []
    for i, document in enumerate(documents):
        want += ours.encode_batch(document.sentences)
        assert [a.tolist() for a in corpus[i]] == want[-len(document.sentences) :]
    encoder.joined = True
    tokens, lengths = encoder.encode(documents, len(want))
    assert lengths.tolist() == list(map(len, want)) and tokens.tolist() == sum(want, [])


def test_pretraining_a_family_on_another_kind_is_noted(family):
    from muppets.tokenization.families import family_note

    name, ours, _ = family
    assert family_note(name, ours) is None  # each style is its family's own
    other = "roberta" if ours.kind != "bpe" else "bert"
    own = STYLES[other].kind
    assert family_note(other, ours) == (
        f"note: a {other} model on a {ours.kind} tokenizer; {other}'s own is {own} "
        f"(muppets tokenizer train --model {other})"
    )


def test_a_roberta_checkpoint_with_its_bpe_tokenizer_converts_and_matches(tmp_path, capsys):
    """A RobertaForMaskedLM saved by transformers beside RobertaTokenizerFast's own files (what a
    real RoBERTa checkpoint is) converts, tokenizes as transformers does and predicts the same."""
    import torch
    from conftest import small_hf_sizes

    from muppets.errors import InputError
    from muppets.recipes.fill_mask import fill_mask
    from muppets.training.pretrained import load_checkpoint

    bpe = train_any(STYLES["roberta"], TRAIN[:300], vocab_size=700, min_frequency=1)
    bpe.save(tmp_path / "tok")
    fast = transformers.RobertaTokenizerFast.from_pretrained(tmp_path / "tok")
    config = transformers.RobertaConfig(
        max_position_embeddings=70, type_vocab_size=1, layer_norm_eps=1e-5, **small_hf_sizes(bpe)
    )
    torch.manual_seed(0)
    hf = transformers.RobertaForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    fast.save_pretrained(tmp_path / "hf")
    args = ["convert", "--input", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]
    assert main([*args, "--to", "muppets"]) == 0, capsys.readouterr().err
    model, _, tokenizer, _, _ = load_checkpoint(tmp_path / "ours")
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.fingerprint() == bpe.fingerprint()
    text = f"{VALID[0][:60]} <mask> of the {VALID[1][:30]}"
    encoded = fast(text, return_tensors="pt")
    ids = torch.tensor([tokenizer.encode_pair(text)[0]])
    assert ids.tolist() == encoded["input_ids"].tolist()
    masked = ids.eq(tokenizer.mask_id)
    with torch.no_grad():
        want = hf(**encoded).logits[masked]
        got = model(ids, torch.ones_like(ids), torch.zeros_like(ids), masked).mlm_logits
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    # fill-mask shows each prediction as transformers' fill-mask pipeline does (token_str)
    (predictions,) = fill_mask(model, tokenizer, text, top_k=3)
    best = want.softmax(-1).topk(3).indices[0].tolist()
    assert [token for token, _ in predictions] == [fast.decode([i]) for i in best]
    with pytest.raises(InputError, match="the text has no <mask> token"):
        fill_mask(model, tokenizer, "no mask here", top_k=3)


def test_tagging_pieces_equal_the_reference_on_words(family):
    """Tagging reads a sentence's own words: the pieces are the transformers tokenizer's with
    is_split_into_words (RoBERTa: add_prefix_space=True, which it requires there)."""
    from muppets.data.readers.conll import Sentence
    from muppets.data.task_features import tagging_features

    name, ours, directory = family
    extra = {"add_prefix_space": True} if name == "roberta" else {}
    # (transformers 5 applies add_prefix_space in from_pretrained, not with tokenizer_file=)
    reference = CLASSES[name][0].from_pretrained(directory, **extra)
    words = [line.split()[:20] for line in VALID[:6]]
    sentences = [Sentence(tuple(w), ("O",) * len(w), "x", 1) for w in words]
    features = tagging_features(sentences, ours, max_seq_length=128)
    # with the family's specials around them: XLNet's <sep> <cls> last (segment 2)
    expected = reference(words, is_split_into_words=True, return_token_type_ids=True)
    assert [f.input_ids.tolist() for f in features] == expected["input_ids"]
    assert [f.token_type_ids.tolist() for f in features] == expected["token_type_ids"]
