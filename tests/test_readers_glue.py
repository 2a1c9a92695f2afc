"""GLUE and generic table readers: exact examples on hand-written files, errors with file and
line, and (when ../shared/data is there) exact counts on the real GLUE dev files."""

from pathlib import Path

import pytest

from muppets.data.readers.glue import GLUE_TASKS, read_glue, read_glue_task
from muppets.data.readers.tabular import Example, read_table, table_labels
from muppets.errors import InputError

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return str(path)


def rows(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def test_cola_headerless_train_and_test_with_header(tmp_path):
    train = write(
        tmp_path / "train.tsv", rows("gj04\t1\t\tThe sailors rode.", "cj99\t0\t*\tHim rode.")
    )
    assert read_glue(train, "cola", "train") == [
        Example("The sailors rode.", None, 1, "train-0", train, 1),
        Example("Him rode.", None, 0, "train-1", train, 2),
    ]
    test = write(tmp_path / "test.tsv", rows("index\tsentence", "0\tBill whistled."))
    assert read_glue(test, "cola", "test") == [
        Example("Bill whistled.", None, None, "test-0", test, 2)
    ]


def test_sst2_keeps_text_as_written(tmp_path):
    path = write(
        tmp_path / "dev.tsv", rows("sentence\tlabel", "it 's charming . \t1", "", "bleak \t0")
    )
    assert read_glue(path, "sst2", "dev") == [
        Example("it 's charming . ", None, 1, "dev-0", path, 2),
        Example("bleak ", None, 0, "dev-1", path, 4),  # the blank line 3 is not a row
    ]


def test_mrpc_bom_header_and_unbalanced_quotes(tmp_path):
    text = rows(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", '0\t11\t12\tHe said " no .\tShe " did .'
    )
    path = write(tmp_path / "dev.tsv", "\ufeff" + text)
    assert read_glue(path, "mrpc", "dev") == [
        Example('He said " no .', 'She " did .', 0, "dev-0", path, 2)
    ]


def test_stsb_float_label_by_header_name(tmp_path):
    header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    )
    line = "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t4.750"
    path = write(tmp_path / "dev.tsv", rows(header, line))
    assert read_glue(path, "stsb", "dev") == [Example("A man.", "A guy.", 4.75, "dev-0", path, 2)]


PAIR_TASKS = [  # task, split, header, row, expected (text_a, text_b, label id)
    (
        "qqp",
        "dev",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "7\t1\t2\tWhy?\tHow?\t1",
        ("Why?", "How?", 1),
    ),
    (
        "mnli",
        "dev_mismatched",
        "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2"
        "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
        "0\t1\t1n\tletters\t(\t(\t(\t(\tA cat.\tAn animal.\tneutral\tneutral\tentailment"
        "\tneutral\tneutral\tneutral",
        ("A cat.", "An animal.", 2),
    ),
    (
        "mnli",
        "train",
        "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label",
        "0\t1\t1c\tgov\t(\t(\t(\t(\tIt is.\tIt isn't.\tcontradiction\tcontradiction",
        ("It is.", "It isn't.", 0),
    ),
    (
        "qnli",
        "dev",
        "index\tquestion\tsentence\tlabel",
        "0\tWho?\tHe did.\tnot_entailment",
        ("Who?", "He did.", 1),
    ),
    (
        "rte",
        "train",
        "index\tsentence1\tsentence2\tlabel",
        "0\tA b.\tA.\tentailment",
        ("A b.", "A.", 0),
    ),
    (
        "wnli",
        "dev",
        "index\tsentence1\tsentence2\tlabel",
        "3\tIt fell.\tThe cup fell.\t1",
        ("It fell.", "The cup fell.", 1),
    ),
]


@pytest.mark.parametrize("task, split, header, row, expected", PAIR_TASKS)
def test_sentence_pair_tasks(tmp_path, task, split, header, row, expected):
    path = write(tmp_path / f"{split}.tsv", rows(header, row))
    assert read_glue(path, task, split) == [Example(*expected, f"{split}-0", path, 2)]


def test_test_sets_have_no_labels_and_read_glue_task_finds_files(tmp_path):
    write(
        tmp_path / "RTE" / "test.tsv", rows("index\tsentence1\tsentence2", "0\tA.\tB.", "1\tC.\tD.")
    )
    found = read_glue_task("rte", tmp_path, "test")
    path = str(tmp_path / "RTE" / "test.tsv")
    assert found == [
        Example("A.", "B.", None, "test-0", path, 2),
        Example("C.", "D.", None, "test-1", path, 3),
    ]
    assert read_glue_task("rte", tmp_path / "RTE", "test") == found  # the task folder itself


def test_glue_table():
    assert list(GLUE_TASKS) == [
        "cola",
        "sst2",
        "mrpc",
        "stsb",
        "qqp",
        "mnli",
        "qnli",
        "rte",
        "wnli",
        "ax",
    ]
    assert {t: s.metric for t, s in GLUE_TASKS.items()} == {
        "cola": "mcc",
        "sst2": "accuracy",
        "mrpc": "accuracy_f1",
        "stsb": "pearson_spearman",
        "qqp": "accuracy_f1",
        "mnli": "accuracy",
        "qnli": "accuracy",
        "rte": "accuracy",
        "wnli": "accuracy",
        "ax": "mcc",
    }
    assert GLUE_TASKS["mnli"].labels == ("contradiction", "entailment", "neutral")
    assert GLUE_TASKS["stsb"].regression and not GLUE_TASKS["rte"].regression


def test_glue_errors_name_file_and_line(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel"
    path = write(tmp_path / "dev.tsv", rows(header, "0\tA\tB\tentailment", "1\tA\tB"))
    with pytest.raises(InputError) as e:
        read_glue(path, "rte", "dev")
    assert str(e.value) == f"{path}:3: expected 4 tab-separated columns, found 3"

    path = write(tmp_path / "bad.tsv", rows("index\tsentence1\tsentence2\tlabel", "0\tA\tB\tmaybe"))
    with pytest.raises(InputError) as e:
        read_glue(path, "rte", "dev")
    assert (
        str(e.value) == f"{path}:2: unknown label 'maybe'; valid labels: entailment, not_entailment"
    )

    path = write(tmp_path / "stsb.tsv", rows("sentence1\tsentence2\tscore", "A\tB\thigh"))
    with pytest.raises(InputError, match=r"stsb.tsv:2: label 'high' is not a number"):
        read_glue(path, "stsb", "dev")

    for text in ("", "sentence\tlabel\n"):  # empty, or a header only
        path = write(tmp_path / "empty.tsv", text)
        with pytest.raises(InputError) as e:
            read_glue(path, "sst2", "dev")
        assert str(e.value) == f"{path}:1: no examples in the file"

    path = write(tmp_path / "renamed.tsv", rows("text\tlabel", "a\t1"))
    with pytest.raises(
        InputError, match=r"renamed.tsv:1: no column 'sentence'; the header has: text, label"
    ):
        read_glue(path, "sst2", "dev")
    with pytest.raises(InputError, match="unknown GLUE task 'sst'; valid tasks: cola, sst2, mrpc"):
        read_glue(path, "sst", "dev")
    with pytest.raises(
        InputError, match="mnli has no split 'dev'; valid splits: train, dev_matched"
    ):
        read_glue_task("mnli", tmp_path, "dev")
    with pytest.raises(InputError, match="no qnli train file 'train.tsv' here or in QNLI/"):
        read_glue_task("qnli", tmp_path, "train")


def test_table_csv_quotes_multiline_and_indices(tmp_path):
    path = write(
        tmp_path / "a.csv", 'label,text\npos,"hello, ""you"""\nneg,"two\nlines"\n\npos,x\n'
    )
    labels = table_labels(path, "label")
    assert labels == ["neg", "pos"]
    assert read_table(path, text_a=-1, label=0, labels=labels) == [
        Example('hello, "you"', None, 1, "0", path, 2),
        Example("two\nlines", None, 0, "1", path, 3),  # the row starts on line 3
        Example("x", None, 1, "2", path, 6),
    ]
    path = write(tmp_path / "b.csv", "label,text\npos,a,b\n")
    with pytest.raises(InputError, match=r"b.csv:2: expected 2 comma-separated columns, found 3"):
        read_table(path, "text", label="label", labels=["pos"])


def test_table_jsonl_and_its_errors(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        '{"q": "Why?", "a": "So.", "y": 1}\n\n{"q": "Hm", "a": "No", "y": 0}\n',
    )
    assert read_table(path, "q", "a", "y", labels=["0", "1"], guid_prefix="t-") == [
        Example("Why?", "So.", 1, "t-0", path, 1),
        Example("Hm", "No", 0, "t-1", path, 3),
    ]
    assert read_table(path, "q", "a", "y", regression=True)[0].label == 1.0
    null = write(tmp_path / "null.jsonl", '{"q": "a", "y": null}\n')
    with pytest.raises(InputError, match=r"null.jsonl:1: the label is null; valid labels: 0, 1"):
        read_table(null, "q", label="y", labels=["0", "1"])
    bad = write(tmp_path / "bad.jsonl", '{"q": "a", "y": 1}\n{"q": "b", "y": 1,}\n')
    with pytest.raises(InputError) as e:
        read_table(bad, "q", label="y", labels=["1"])
    assert (
        str(e.value)
        == f"{bad}:2: invalid JSON: Expecting property name enclosed in double quotes (column 19)"
    )
    with pytest.raises(InputError, match=r"a.jsonl:1: no key 'text'; the object has: q, a, y"):
        read_table(path, "text")
    with pytest.raises(InputError, match="a classification label column needs the list of labels"):
        read_table(path, "q", label="y")


REAL_DEV = {  # task: (examples, sum of label ids or of STS-B scores)
    "cola": (1043, 721),
    "sst2": (872, 444),
    "mrpc": (408, 279),
    "stsb": (1500, 3545.861),
    "qnli": (5463, 2761),
    "rte": (277, 131),
    "wnli": (71, 31),
}


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="../shared/data/glue is not here")
@pytest.mark.parametrize("task", list(REAL_DEV))
def test_real_glue_dev_files(task):
    examples = read_glue_task(task, GLUE_DIR, "dev")
    count, label_sum = REAL_DEV[task]
    assert len(examples) == count
    assert sum(e.label for e in examples) == pytest.approx(label_sum, abs=1e-3)
    assert examples[-1].line == count + (task != "cola")  # header line, except CoLA
    assert len({e.guid for e in examples}) == count


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="../shared/data/glue is not here")
def test_real_glue_test_files_have_no_labels():
    counts = {t: len(read_glue_task(t, GLUE_DIR, "test")) for t in ("cola", "mrpc", "stsb", "rte")}
    assert counts == {"cola": 1063, "mrpc": 1725, "stsb": 1379, "rte": 3000}
    assert read_glue_task("ax", GLUE_DIR, "test")[0].label is None
