"""ERNIE unit boundaries: phrase scoring by hand, character spans -> token links, the units file
and its errors (one line, file and line, exit 2), and prepare storing the links in the shards."""

import json

import numpy as np
import pytest

from muppets.data.boundaries import bio_entities, token_links
from muppets.data.phrases import (
    PhraseModel,
    count_pass,
    find_phrases,
    learn_phrases,
    phrase_score,
    select_pairs,
)
from muppets.data.prepare import PrepareConfig, prepare_corpus
from muppets.data.shards import ShardedCorpus
from muppets.errors import InputError

TEXTS = [
    "New York is big.",
    "I love New York city.",
    "New York city is old, York is older.",
    "a new car",
    "New York city",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "new", "york", "city"]
VOCAB += ["is", "big", "in", "ran", ".", "##s", "a", "dog"]


def test_phrase_score_is_mikolovs():
    assert phrase_score(4, 5, 5, 1) == pytest.approx(3 / 25)
    assert phrase_score(1, 1, 9, 1) == 0.0


def test_phrase_passes_on_a_tiny_corpus_scored_by_hand():
    unigrams, bigrams, total = count_pass(TEXTS, PhraseModel(delta=1))
    assert total == 23 and unigrams["new"] == unigrams["york"] == 5 and unigrams["city"] == 3
    assert bigrams[("new", "york")] == 4 and bigrams[("york", "city")] == 3
    assert bigrams[(None, "york")] == 1  # "old, York": the comma is a barrier
    scores = select_pairs(unigrams, bigrams, total, delta=1, threshold=1.0)
    # (count(ab) - 1) / (count(a) count(b)) * 23
    assert scores == pytest.approx(
        {("new", "york"): 3 / 25 * 23, ("york", "city"): 2 / 15 * 23, ("york", "is"): 1 / 15 * 23}
    )
    model = learn_phrases(lambda: TEXTS, delta=1, thresholds=(2.0, 2.0))
    # pass 1: new york 2.76 and york city 3.07 pass 2.0; york is 1.53 does not
    assert model.passes[0] == {("new", "york"), ("york", "city")}
    # pass 2 over [new_york city ...]: 19 words, new_york 4, city 3, together 3:
    # (3 - 1) / (4 * 3) * 19 = 3.17 > 2
    assert model.passes[1] == {("new\x1fyork", "city")}
    found = [[t[a:b] for a, b in find_phrases(t, model)] for t in TEXTS]
    assert found == [["New York"], ["New York city"], ["New York city"], [], ["New York city"]]


def test_token_links_follow_character_overlap():
    # tokens of "new york city is big": a unit over "york city" and one inside "big" ([17, 19])
    offsets = np.array([[0, 3], [4, 8], [9, 13], [14, 16], [17, 20]])
    links = token_links([(4, 13), (17, 19)], offsets)
    assert links.tolist() == [False, False, True, False, False]
    assert token_links([(0, 16)], offsets).tolist() == [False, True, True, True, False]
    assert token_links([], offsets).tolist() == [False] * 5


def test_bio_entities_read_as_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O"]
    assert bio_entities(tags) == [(0, 2), (3, 5), (5, 6), (6, 7)]


def corpus_and_vocab(tmp_path, texts):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return str(corpus), str(vocab)


def write_units(tmp_path, records):
    path = tmp_path / "units.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


DOCS = ["the new york cats sat.\nthe dog ran in new york city.", "a cat is big."]


def test_prepare_stores_links_from_a_units_file(tmp_path):
    corpus, vocab = corpus_and_vocab(tmp_path, DOCS)
    # document 1: "new york cats" is a phrase (the second sentence starts at 23), "new york"
    # and "new york city" entities; document 2: no units
    units = write_units(
        tmp_path,
        [
            {"phrases": [[4, 17]], "entities": [[4, 12], [38, 51]], "text": DOCS[0]},
            {},
        ],
    )
    config = PrepareConfig(inputs=[corpus], tokenizer=vocab, out=str(tmp_path / "s"))
    config.units_file = units
    manifest = prepare_corpus(config)
    assert manifest["units"]["phrase"]["units"] == 1 and manifest["units"]["entity"]["units"] == 2
    shards = ShardedCorpus(tmp_path / "s")
    assert set(shards.unit_kinds) == {"phrase", "entity"}
    # the new york cat ##s sat . | the dog ran in new york city .
    assert [s.tolist() for s in shards[0]] == [
        [5, 8, 9, 6, 16, 7, 15],
        [5, 18, 14, 13, 8, 9, 10, 15],
    ]
    bits = [u.tolist() for u in shards.units(0)]
    assert bits == [[0, 0, 3, 1, 1, 0, 0], [0, 0, 0, 0, 0, 2, 2, 0]]
    assert [u.tolist() for u in shards.units(1)] == [[0, 0, 0, 0, 0]]


def test_prepare_learns_phrases_and_tags_entities(tmp_path):
    corpus, vocab = corpus_and_vocab(tmp_path, DOCS * 3)
    config = PrepareConfig(inputs=[corpus], tokenizer=vocab, out=str(tmp_path / "s"))
    config.phrases, config.phrase_min_count, config.phrase_thresholds = True, 3.0, [2.0]
    config.entities_model = "fake-ner"

    def tagger(sentences):  # "york" and what follows it up to "city"
        return [
            ["B-LOC" if w == "york" else "I-LOC" if w == "city" else "O" for w in s]
            for s in sentences
        ]

    manifest = prepare_corpus(config, entities=tagger)
    assert manifest["units"]["entity"] == {"source": "ner model", "path": "fake-ner", "units": 6}
    shards = ShardedCorpus(tmp_path / "s")
    # phrases: only "new york", (6 - 3) / (6 x 6) x 48 words = 4 > 2 (other pairs: 3 - 3 = 0);
    # entity: "york city"
    assert [u.tolist() for u in shards.units(0)] == [
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 2, 0],
    ]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"phrases": [[-1, 3]]}, "'phrases': [-1, 3] falls outside the text"),
        ({"entities": [[5, 5]]}, "'entities': [5, 5] falls outside the text"),
        ({"phrases": [[20, 60]]}, "'phrases': [20, 60] crosses the end of its document"),
        ({"entities": [[4, 12], [8, 17]]}, "'entities': units [4, 12] and [8, 17] overlap"),
        ({"phrases": [[1, "x"]]}, "'phrases': [1, 'x'] is not a [start, end] pair"),
        ({"text": "something else"}, "'text' differs from document 1 of the corpus"),
        ({"units": []}, "unknown key 'units'"),
    ],
)
def test_bad_units_file_is_one_line_with_file_and_line(tmp_path, cli_error, record, message):
    corpus, vocab = corpus_and_vocab(tmp_path, DOCS)
    units = write_units(tmp_path, [record, {}])
    out = str(tmp_path / "s")
    line = cli_error(
        ["prepare", "--inputs", corpus, "--tokenizer", vocab, "--out", out, "--units-file", units]
    )
    assert f"{units}:1" in line and message in line


def test_units_file_out_of_step_with_the_corpus(tmp_path, cli_error):
    corpus, vocab = corpus_and_vocab(tmp_path, DOCS)
    out = str(tmp_path / "s")
    argv = ["prepare", "--inputs", corpus, "--tokenizer", vocab, "--out", out, "--units-file"]
    short = write_units(tmp_path, [{}])
    line = cli_error([*argv, short])
    assert short in line and "has 1 lines, but the corpus has more documents" in line
    assert f"{corpus}:2" in line
    long = write_units(tmp_path, [{}, {}, {"phrases": []}])
    line = cli_error([*argv, long])
    assert f"{long}:3" in line and "more lines than the corpus has documents (2)" in line


def test_entities_model_tags_the_corpus_as_predict_does(tmp_path, tiny_tokenizer):
    import torch

    from muppets.cli.main import main
    from muppets.data.boundaries import bio_entities
    from muppets.data.readers.conll import Sentence
    from muppets.models.registry import build_encoder, preset_config
    from muppets.recipes.entity_units import load_entity_tagger
    from muppets.tasks.prediction import predict
    from muppets.tasks.registry import build_head, task_spec
    from muppets.tasks.setup import TaskSetup, save_task
    from muppets.training.checkpoint import save_pretrained
    from muppets.training.pretrained import load_finetuned

    torch.manual_seed(3)  # a random tagger: some words come out as entities
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vocabulary = {"vocab_size": tiny_tokenizer.vocab_size, "pad_token_id": tiny_tokenizer.pad_id}
    spec = task_spec("conll2003")
    config = preset_config("bert-tiny", **vocabulary, **sizes)
    model = build_head(spec, build_encoder(config), len(spec.labels)).eval()
    ner = tmp_path / "ner"
    save_pretrained(ner, model, config.to_dict())
    tiny_tokenizer.save(ner)
    save_task(ner, TaskSetup("conll2003", "tagging", list(spec.labels), 16))

    texts = ["the cat sat on the mat.", "a dog ran in the park.\nthe sun is hot."]
    sentences = [
        ["the", "cat", "sat", "on", "the", "mat"],
        ["a", "dog", "ran", "in", "the", "park"],
    ]
    tags = load_entity_tagger(str(ner))(sentences + [[]])
    loaded, setup, tokenizer = load_finetuned(ner)
    examples = [Sentence(w, ["O"] * len(w), "x", 0) for w in sentences]
    features = setup.featurize(examples, tokenizer, labelled=False)
    assert tags == predict(loaded, setup, examples, features, tokenizer.pad_id)[0] + [[]]
    entities = [bio_entities(t) for t in tags[:2]]
    assert any(entities)  # the test means something

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "s"
    argv = ["prepare", "--inputs", str(corpus), "--tokenizer", str(ner), "--out", str(out)]
    assert main([*argv, "--entities-model", str(ner)]) == 0
    shards = ShardedCorpus(out)
    assert set(shards.unit_kinds) == {"entity"}
    stored = [shards.units(0)[0], shards.units(1)[0]]  # the first sentence of each document
    for words, spans, bits in zip(sentences, entities, stored, strict=True):
        ids = [tiny_tokenizer.encode_batch([w])[0] for w in words]
        first = np.cumsum([0] + [len(i) for i in ids])  # token index of each word
        expected = np.zeros(first[-1] + 1, int)  # and the final "."
        for a, b in spans:  # every token of the entity but its first links to the one before
            expected[first[a] + 1 : first[b]] = 2
        assert bits.tolist() == expected.tolist()


def test_held_out_shards_take_the_training_phrases(tmp_path):
    corpus, vocab = corpus_and_vocab(tmp_path, DOCS * 3)
    train = PrepareConfig(inputs=[corpus], tokenizer=vocab, out=str(tmp_path / "train"))
    train.phrases, train.phrase_min_count, train.phrase_thresholds = True, 3.0, [2.0]
    prepare_corpus(train)
    valid_dir = tmp_path / "valid"
    valid_dir.mkdir()
    valid_corpus, _ = corpus_and_vocab(valid_dir, DOCS[:1])  # too small to learn any phrase
    valid = PrepareConfig(inputs=[valid_corpus], tokenizer=vocab, out=str(tmp_path / "v"))
    valid.phrases_from = str(tmp_path / "train")
    prepare_corpus(valid)
    saved = json.loads((tmp_path / "v" / "phrases.json").read_text())
    assert saved == json.loads((tmp_path / "train" / "phrases.json").read_text())
    assert saved["passes"] == [[["new", "york"]]]
    shards = ShardedCorpus(tmp_path / "v")
    assert [u.tolist() for u in shards.units(0)] == [
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0],
    ]
    valid.phrases_from = str(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        prepare_corpus(valid)
