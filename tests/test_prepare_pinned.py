"""prepare's shards pinned byte for byte in each tokenizer family, so that speed work on the
tokenize-and-write path cannot change what is written.

A small vocabulary of each kind (WordPiece / BERT, byte-level BPE / RoBERTa, Unigram / ALBERT) is
trained on the bundled validation text, which is then prepared; the sha256 of every shard file and
the word-start flags of the tokens (what whole-word masking reads) must equal the values recorded
before the prepare path was split and sped up (issue 15), with tokenizers 0.23.3. The Unigram
pins hold since its trainer's added characters are ordered (unigram._order_added_characters).
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from muppets.data.prepare import (
    PrepareConfig,
    TokenizerTrainConfig,
    prepare_corpus,
    train_tokenizer,
)
from muppets.data.shards import ShardedCorpus
from muppets.tokenization.families import load_any_tokenizer

VALID = str(Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.valid.txt")
# kind -> (tokens, word starts among them, sha256 of the word-start flags, sha256 of the shards)
PINNED = {
    "wordpiece": (
        73889,
        38241,
        "306889f6fcec799667a5f11636240ec8ff3d990419153a87b0ca7b07c3081c90",
        "44d81f9607c9b9d184836c62c7c985912071bed7c463dfe81ee9839f79a0721b",
    ),
    "bpe": (
        80246,
        34427,
        "28fa99fe7ab1ed1a8021f6fa62a94382508f7d6d85661dd0dffcec43e79f455d",
        "2e0db108c9e1742113c025cacd18c607e2b6966eef381c7abcab03cb093e1cab",
    ),
    "unigram": (
        72174,
        34876,
        "bdb92fd17fcff38cd74a56929f4e02f3652eb6cf092d62709c20a783eb1d28a9",
        "6d03ed22832096908df1b35a0f040a003f5b93bdc26807243bd8ae60c3bb035f",
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", list(PINNED))
def test_shards_and_word_starts_equal_the_pinned_ones(kind, tmp_path):
    train = TokenizerTrainConfig([VALID], str(tmp_path / "tok"), vocab_size=800, kind=kind)
    train_tokenizer(train)
    out = tmp_path / "shards"
    # Small batches, so that several batches and a shard roll-over are on the path.
    config = PrepareConfig([VALID], str(tmp_path / "tok"), str(out), batch_sentences=300)
    config.shard_tokens = 20_000
    manifest = prepare_corpus(config)
    shards = sorted(out.glob("shard-*.bin"))
    assert len(manifest["shards"]) > 1
    digest = hashlib.sha256()
    for path in shards:
        digest.update(path.name.encode() + path.read_bytes())
    tokens = np.concatenate([np.asarray(s.tokens) for s in ShardedCorpus(out).shards])
    starts = ~load_any_tokenizer(out).continuation_mask()[tokens]  # (T,) bool
    got = (len(tokens), int(starts.sum()), sha256(starts.tobytes()), digest.hexdigest())
    assert got == PINNED[kind]
