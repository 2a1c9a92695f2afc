"""ELMo's two tokenizations: character ids in (bilm-tf / AllenNLP convention), word ids out."""

import pytest
import torch

from muppets.errors import InputError
from muppets.tokenization.characters import batch_to_char_ids, word_to_char_ids
from muppets.tokenization.words import WordVocabulary, build_word_vocabulary

BOW, EOW, PAD = 259, 260, 261  # raw 258, 259, 260 shifted by one


def padded(ids: list[int]) -> list[int]:
    return ids + [PAD] * (50 - len(ids))


def test_ascii_word_is_bow_bytes_plus_one_eow_then_padding_characters():
    assert word_to_char_ids("a") == padded([BOW, 98, EOW])
    assert word_to_char_ids("Hi") == padded([BOW, 73, 106, EOW])


def test_sentence_boundary_tokens_map_to_their_special_characters():
    assert word_to_char_ids("<S>") == padded([BOW, 257, EOW])  # raw 256 + 1
    assert word_to_char_ids("</S>") == padded([BOW, 258, EOW])  # raw 257 + 1


def test_non_ascii_word_counts_utf8_bytes():
    # "café" = 63 61 66 c3 a9: five bytes, each + 1
    assert word_to_char_ids("café") == padded([BOW, 100, 98, 103, 196, 170, EOW])


def test_long_word_keeps_48_bytes_and_its_end_of_word():
    word = "abcdefghij" * 6  # 60 characters
    ids = word_to_char_ids(word)
    assert len(ids) == 50
    assert ids == [BOW] + [b + 1 for b in word.encode()[:48]] + [EOW]


def test_batch_adds_boundaries_and_zero_rows_for_padding_tokens():
    ids = batch_to_char_ids([["a", "b"], ["c"]])
    assert ids.shape == (2, 4, 50) and ids.dtype == torch.long
    assert ids[0].tolist() == [word_to_char_ids(w) for w in ("<S>", "a", "b", "</S>")]
    assert ids[1, :3].tolist() == [word_to_char_ids(w) for w in ("<S>", "c", "</S>")]
    assert ids[1, 3].eq(0).all()
    assert ids.ne(0).any(-1).tolist() == [[True] * 4, [True, True, True, False]]
    plain = batch_to_char_ids([["a", "b"], []], add_sentence_boundaries=False)
    assert plain.shape == (2, 2, 50) and plain[1].eq(0).all()
    assert plain[0].tolist() == [word_to_char_ids("a"), word_to_char_ids("b")]


def test_word_vocabulary_orders_by_count_and_cuts_by_min_count_and_max_size():
    counts = {"the": 5, "cat": 2, "a": 5, "dog": 1, "<S>": 9}
    vocab = build_word_vocabulary(counts, min_count=2)
    assert vocab.tokens == ["<PAD>", "<S>", "</S>", "<UNK>", "a", "the", "cat"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.encode(["the", "dog"]) == [1, 5, 3, 2]
    assert vocab.encode(["cat"], add_sentence_boundaries=False) == [6]
    assert build_word_vocabulary(counts, max_size=5).tokens[4:] == ["a"]


def test_word_vocabulary_round_trip(tmp_path):
    vocab = build_word_vocabulary({"x": 3, "y": 2, "é": 1})
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8") == "<PAD>\n<S>\n</S>\n<UNK>\nx\ny\né\n"
    loaded = WordVocabulary.load(path)
    assert loaded.tokens == vocab.tokens and loaded.token_to_id("é") == 6


def test_bilm_tf_vocabulary_without_padding_loads():
    vocab = WordVocabulary(["</S>", "<S>", "<UNK>", "the"])
    assert (vocab.eos_id, vocab.bos_id, vocab.unk_id, vocab.pad_id) == (0, 1, 2, None)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("<S>\n</S>\n<UNK>\nthe\nthe\n", 5, r"duplicate token 'the' \(first on line 4\)"),
        ("<S>\n</S>\n\n<UNK>\n", 3, "empty token"),
        ("<S>\n</S>\n<UNK>\nnew york\n", 4, "contains whitespace"),
    ],
)
def test_bad_vocabulary_line_names_path_and_line(tmp_path, text, line, message):
    path = tmp_path / "vocab.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        WordVocabulary.load(path)
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_vocabulary_without_specials_or_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<S>\nthe\n", encoding="utf-8")
    with pytest.raises(InputError, match="lacks the special token.*</S>, <UNK>"):
        WordVocabulary.load(path)
    path.write_bytes(b"<S>\n</S>\n\xff\n")
    with pytest.raises(InputError) as caught:
        WordVocabulary.load(path)
    assert caught.value.line == 3
