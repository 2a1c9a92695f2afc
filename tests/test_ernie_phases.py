"""ERNIE's three stages as [[phases]]: basic (whole_word) -> phrase -> entity masking in one run.

The shards are a slice of the bundled sample prepared with learned phrases and a units file of
entities (runs of capitalised words, a stand-in for a tagger). Each phase's batches are checked
against the instances they came from: whole-word masking splits phrases, the phrase phase never
splits a phrase, the entity phase never splits an entity."""

import json
import re
import tomllib
from pathlib import Path

import pytest

from muppets.cli.main import main
from muppets.data.masking import IGNORE_INDEX, MaskingConfig
from muppets.data.pretraining import PretrainingBatches, SpecialIds, part_instances
from muppets.data.shards import ShardedCorpus
from muppets.data.text import read_documents
from muppets.data.unit_masking import UnitView, unit_spans, unpack
from muppets.recipes.pretrain import PretrainConfig
from muppets.tokenization import load_tokenizer

SAMPLE = Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.train.txt"
NAMES = re.compile(r"[A-Z]\w+(?: [A-Z]\w+)+")  # "New York City", "John Smith"


@pytest.fixture(scope="module")
def ernie_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ernie")
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    end = next(n for n in range(1500, len(lines)) if lines[n].startswith("</doc>")) + 1
    text = root / "train.txt"
    text.write_text("".join(lines[:end]), encoding="utf-8")
    units = root / "entities.jsonl"
    with units.open("w", encoding="utf-8") as f:
        for document in read_documents([str(text)], segment=False):
            spans = [list(m.span()) for m in NAMES.finditer("\n".join(document.sentences))]
            f.write(json.dumps({"entities": spans}) + "\n")
    tok = str(root / "tok")
    assert (
        main(["tokenizer", "train", "--inputs", str(text), "--out", tok, "--vocab-size", "500"])
        == 0
    )
    args = ["prepare", "--inputs", str(text), "--tokenizer", tok, "--out", str(root / "train")]
    args += ["--units-file", str(units), "--phrases", "--phrase-thresholds", "50", "25"]
    assert main(args) == 0
    return root


TOML = """
model = "bert-tiny"
objective = "mlm+nsp"
max_seq_length = 64
batch_size = 8
micro_batch_size = 4
partitions = 2
learning_rate = 1e-3
warmup_steps = 1
log_every = 1
eval_every = 0
save_every = 0

[[phases]]
max_steps = 1
masking = "whole_word"

[[phases]]
max_steps = 1
masking = "phrase"

[[phases]]
max_steps = 1
masking = "entity"
"""


def split_units(corpus, config: PretrainConfig, kind: str, steps: int = 4) -> tuple[int, int]:
    """(units of `kind` partly masked, units of `kind` wholly masked) over the first `steps`
    optimizer steps of the batches `config` trains on."""
    tokenizer = load_tokenizer(config.train_data)
    t = tokenizer
    ids = SpecialIds(t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.vocab_size)
    continuation = t.continuation_mask()
    data = config.data_config()
    batches = PretrainingBatches(corpus, data, ids, continuation=continuation)
    streams = {p: part_instances(UnitView(corpus, kind), p, data, ids) for p in batches.parts}
    masking = MaskingConfig(t.vocab_size, t.mask_id, (t.pad_id, t.cls_id, t.sep_id))
    partly = wholly = 0
    for _ in range(steps):
        labels = [  # the rows of one step, in the order of the instances below
            row for _ in range(batches.accumulation) for row in next(batches)["labels"].numpy()
        ]
        per_part = data.batch_size // data.partitions
        rows = [next(streams[p])[2] for p in batches.parts for _ in range(per_part)]
        for instance, row in zip(rows, labels, strict=True):
            plain, links = unpack(instance.tokens)
            chosen = row[: len(plain)] != IGNORE_INDEX
            for s, e in zip(*unit_spans(plain, links, masking, continuation), strict=True):
                if links[s + 1 : e].any():  # a unit of `kind`, not a lone word
                    partly += bool(chosen[s:e].any() and not chosen[s:e].all())
                    wholly += bool(chosen[s:e].all())
    return partly, wholly


def test_phases_switch_the_masking_mode(ernie_shards, tmp_path, one_thread):
    corpus = ShardedCorpus(ernie_shards / "train")
    manifest = json.loads((ernie_shards / "train" / "manifest.json").read_text())
    assert manifest["units"]["phrase"]["units"] > 100 and manifest["units"]["entity"]["units"] > 50
    config_file = tmp_path / "ernie.toml"
    config_file.write_text(f'train_data = "{ernie_shards / "train"}"\n' + TOML, encoding="utf-8")
    values = tomllib.loads(config_file.read_text())
    phases = PretrainConfig(train_data=values["train_data"], phases=values["phases"])
    masks = [c.masking for c in phases.phase_configs()]
    assert masks == ["whole_word", "phrase", "entity"]
    basic, phrase, entity = phases.phase_configs()
    # whole-word masking splits some phrases and entities; their phases never do
    assert split_units(corpus, basic, "phrase")[0] > 0
    assert split_units(corpus, basic, "entity")[0] > 0
    partly, wholly = split_units(corpus, phrase, "phrase")
    assert partly == 0 and wholly > 0
    partly, wholly = split_units(corpus, entity, "entity")
    assert partly == 0 and wholly > 0
    # and the run itself: three phases, one after the other
    out = tmp_path / "run"
    assert (
        main(["pretrain", "--config", str(config_file), "--out", str(out), "--device", "cpu"]) == 0
    )
    result = json.loads((out / "result.json").read_text())
    phase_results = [
        json.loads((out / f"phase-{k}" / "result.json").read_text()) for k in (1, 2, 3)
    ]
    assert [r["config"]["masking"] for r in phase_results] == masks
    assert [p["phase"] for p in result["phases"]] == [1, 2, 3]


def test_a_phase_asking_for_units_the_shards_lack_is_one_line(tiny_shards, tmp_path, cli_error):
    config_file = tmp_path / "bad.toml"
    body = TOML.replace('masking = "phrase"', 'masking = "whole_word"')
    config_file.write_text(f'train_data = "{tiny_shards / "train"}"\n' + body, encoding="utf-8")
    line = cli_error(["pretrain", "--config", str(config_file), "--out", str(tmp_path / "r")])
    assert "phases[3]: masking 'entity' needs entity units in the shards (they have: none)" in line
    assert not (tmp_path / "r" / "phase-1" / "metrics.jsonl").exists()  # refused before training
