"""Write the malformed inputs of tests/test_malformed_inputs.py into this folder (rerun to
refresh them): every file is small and wrong in one way. Shards and checkpoints are corrupted at
test time from real ones (tests/test_malformed_inputs.py), since they are binary."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
LATIN1 = "Caf\xe9 au lait".encode("latin-1")


def squad(qas, context="The cat sat on the mat.") -> str:
    return json.dumps(
        {"version": "v2.0", "data": [{"paragraphs": [{"context": context, "qas": qas}]}]}
    )


def question(qid="q1", text="cat", start=4, **extra) -> dict:
    return {
        "id": qid,
        "question": "Who sat?",
        "answers": [{"text": text, "answer_start": start}],
        **extra,
    }


FILES: dict[str, bytes | str] = {
    # corpora (tokenizer train, prepare, pretrain-elmo, extract)
    "text/latin1.txt": b"the cat sat .\n" + LATIN1 + b"\n",
    "text/empty.txt": "",
    "text/blank.txt": "\n\n   \n\t\n",
    "text/unclosed.txt": '<doc id="1" title="A">\nA\n\nsome text here .\n',
    "text/stray_close.txt": "some text .\n</doc>\n",
    "text/bad.jsonl": '{"text": "fine"}\n{"text": "broken\n',
    "text/no_text.jsonl": '{"body": "no text key"}\n',
    "text/null_text.jsonl": '{"text": null}\n',
    "text/number_text.jsonl": '{"text": 17}\n',
    "text/array.jsonl": '["a", "list"]\n',
    "text/nul.txt": b"the cat\x00 sat .\n\xff\xfe\n",
    # tables (finetune --task sst2/stsb/tabular, evaluate --file, predict --input)
    "table/latin1.tsv": b"sentence\tlabel\n" + LATIN1 + b"\t1\n",
    "table/empty.tsv": "",
    "table/header_only.tsv": "sentence\tlabel\n",
    "table/no_label_column.tsv": "sentence\tpolarity\na fine film\t1\n",
    "table/no_text_column.tsv": "text\tlabel\na fine film\t1\n",
    "table/empty_text.tsv": "sentence\tlabel\n\t1\nok\t0\n",
    "table/ragged.tsv": "sentence\tlabel\na fine film\n",
    "table/bad_label_stsb.tsv": "sentence1\tsentence2\tlabel\na\tb\tnan\n",
    "table/range_stsb.tsv": "sentence1\tsentence2\tlabel\na\tb\t17.5\n",
    "table/word_label_stsb.tsv": "sentence1\tsentence2\tlabel\na\tb\thigh\n",
    "table/null_text.jsonl": '{"sentence": null, "label": "pos"}\n',
    "table/mixed_labels.jsonl": '{"sentence": "a", "label": "pos"}\n{"sentence": "b", "label": 1}',
    "table/bad.jsonl": '{"sentence": "a", "label": "pos"}\n{"sentence": \n',
    "table/list_row.jsonl": '["a", "pos"]\n',
    "table/missing_key.jsonl": '{"text": "a", "label": "pos"}\n',
    "table/quote.csv": 'sentence,label\n"a fine film,1\n',
    "table/latin1.csv": b"sentence,label\n" + LATIN1 + b",1\n",
    "table/unknown_label.tsv": "sentence\tlabel\na fine film\tmaybe\n",
    # SQuAD
    "squad/not_json.json": "{this is not json",
    "squad/empty.json": "",
    "squad/no_data.json": '{"version": "v1.1"}',
    "squad/data_not_list.json": '{"data": {"paragraphs": []}}',
    "squad/list.json": "[1, 2, 3]",
    "squad/latin1.json": b'{"data": [{"paragraphs": [{"context": "' + LATIN1 + b'", "qas": []}]}]}',
    "squad/duplicate_ids.json": squad([question("q1"), question("q1")]),
    "squad/no_context.json": json.dumps({"data": [{"paragraphs": [{"qas": [question()]}]}]}),
    "squad/no_question.json": squad([{"id": "q1", "answers": []}]),
    "squad/no_id.json": squad([{"question": "Who?", "answers": []}]),
    "squad/answer_not_dict.json": squad([{"id": "q1", "question": "Who?", "answers": ["cat"]}]),
    "squad/start_not_int.json": squad([question(start="four")]),
    "squad/null_context.json": squad([question()], context=None),
    "squad/no_answers.json": squad([question(start=400, text="dog")]),
    "squad/truncated.json": squad([question()])[:-7],
    # CoNLL
    "conll/latin1.txt": b"EU B-ORG\n" + LATIN1 + b" O\n\n",
    "conll/empty.txt": "",
    "conll/one_column.txt": "EU\nrejects\n\n",
    "conll/bad_tag.txt": "EU X-ORG\nrejects O\n\n",
    "conll/blank.txt": "\n\n\n",
    # configs (--config)
    "config/syntax.toml": "learning_rate = = 3\n",
    "config/unknown_key.toml": "no_such_option = 1\n",
    "config/wrong_type.toml": 'max_steps = "many"\n',
    "config/latin1.toml": b"out = '" + LATIN1 + b"'\n",
    "config/table_value.toml": "[max_steps]\nx = 1\n",
    "config/empty_phases.toml": "[[phases]]\nno_such_key = 1\n",
}


def main() -> None:
    for name, content in FILES.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


if __name__ == "__main__":
    main()
