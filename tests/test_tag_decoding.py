"""IOB1 <-> IOB2 conversion, BIO repair, entity spans (= seqeval's get_entities) and first-subword
alignment on hand-built sequences."""

import random

import pytest

from muppets.tasks.tag_decoding import (
    align_first_subword,
    convert_tags,
    entity_spans,
    invalid_bio_positions,
    iob1_to_iob2,
    iob2_to_iob1,
    repair_bio,
    split_tag,
    words_from_subwords,
)

IOB1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "I-MISC"]
IOB2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "B-MISC"]


def test_iob1_iob2_conversion_both_ways():
    assert iob1_to_iob2(IOB1) == IOB2
    assert iob2_to_iob1(IOB2) == IOB1
    assert convert_tags(IOB1, "iob1", "bio") == IOB2
    assert convert_tags(IOB2, "bio", "iob1") == IOB1
    assert convert_tags(IOB2, "iob2", "bio") == IOB2
    with pytest.raises(
        ValueError, match="unknown tag scheme 'bioes'; valid schemes: iob1, iob2, bio"
    ):
        convert_tags(IOB2, "bioes", "bio")


def test_repair_bio_rewrites_chunk_starting_i_tags():
    tags = ["I-PER", "O", "I-PER", "I-PER", "B-LOC", "I-ORG", "I-ORG", "B-PER", "I-PER"]
    assert invalid_bio_positions(tags) == [0, 2, 5]
    assert repair_bio(tags) == [
        "B-PER",
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]
    assert tags[0] == "I-PER"  # the input is not changed
    spans = [("PER", 0, 0), ("PER", 2, 3), ("LOC", 4, 4), ("ORG", 5, 6), ("PER", 7, 8)]
    assert entity_spans(tags) == entity_spans(repair_bio(tags)) == spans


def test_split_tag_rejects_what_is_not_a_tag():
    assert split_tag("B-WORK_OF_ART") == ("B", "WORK_OF_ART")
    assert split_tag("O") == ("O", None)
    for bad in ("PER", "B", "B-", "X-PER", ""):
        with pytest.raises(ValueError, match="is not a tag of the form O, B-X, I-X"):
            split_tag(bad)


def random_tags(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]) for _ in range(n)]


def test_entity_spans_equal_seqeval_and_survive_repair_on_random_sequences():
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling").get_entities
    rng = random.Random(0)
    for _ in range(300):
        tags = random_tags(rng, rng.randint(0, 12))
        assert entity_spans(tags) == get_entities(tags)
        repaired = repair_bio(tags)
        assert entity_spans(repaired) == entity_spans(tags)
        assert invalid_bio_positions(repaired) == []
        assert iob1_to_iob2(iob2_to_iob1(repaired)) == repaired  # round trip


def test_entity_spans_bioes_like_seqeval():
    tags = ["S-PER", "B-LOC", "E-LOC", "I-LOC", "E-LOC", "O", "E-ORG"]
    assert entity_spans(tags) == [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 4), ("ORG", 6, 6)]


def test_first_subword_alignment_and_back():
    # [CLS] Lovelace(3 pieces) wrote notes(2 pieces) [SEP]
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]
    word_labels = [4, 0, 7]
    labels = align_first_subword(word_ids, word_labels)
    assert labels == [-100, 4, -100, -100, 0, 7, -100, -100]
    predictions = ["x", "B-PER", "I-PER", "I-PER", "O", "B-LOC", "O", "y"]
    assert words_from_subwords(word_ids, predictions, num_words=3) == ["B-PER", "O", "B-LOC"]
    # a word cut off by truncation gets `fill`
    assert words_from_subwords(word_ids[:5], predictions[:5], num_words=3, fill="O") == [
        "B-PER",
        "O",
        "O",
    ]
    assert align_first_subword([None, 0, 1, 1], [2, 3], ignore_index=-1) == [-1, 2, 3, -1]
    with pytest.raises(ValueError, match="word id 2 is out of range for 2 words"):
        align_first_subword([0, 2], [1, 1])
