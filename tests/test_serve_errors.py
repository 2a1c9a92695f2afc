"""Bad requests get a JSON error naming the field (400/401/404/413/422) and the server goes on
serving; an API key guards every route but /health; a model that does not load is one line."""

import http.client
import json

import pytest

from muppets.serve.app import Limits
from tests.serve_helpers import call, running, save_qa, served_app

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONTEXT = "the cat sat on the mat . a dog ran in the park . the sun is hot ."
GOOD = {"inputs": [{"question": "who sat ?", "context": CONTEXT}]}
LIMITS = Limits(api_key=KEY, max_body_bytes=2000, max_inputs=4, max_text_chars=500)


@pytest.fixture(scope="module")
def port(tiny_tokenizer, tmp_path_factory, one_thread):
    model = save_qa(
        tmp_path_factory.mktemp("qa"), tiny_tokenizer, ["who sat ?", "a dog ?"], CONTEXT
    )
    with running(served_app(model, LIMITS)) as port:
        yield port


def item(**fields):
    return {"inputs": [{"question": "who sat ?", "context": CONTEXT, **fields}]}


# (path, body, status, field, start of the message)
BAD = [
    ("/qa", b'{"inputs": [', 400, "body", "malformed JSON: Expecting value at line 1 column 13"),
    ("/qa", b'{"inputs": "\xff\xfe"}', 400, "body", "not UTF-8: byte 0xff at 12"),
    ("/qa", [1, 2], 422, "body", "a JSON object is needed, not list"),
    ("/qa", {"inputs": [{"context": CONTEXT}]}, 422, "inputs.0.question", "Field required"),
    ("/qa", {"inputs": [{"question": "who ?"}]}, 422, "inputs.0.context", "Field required"),
    ("/qa", {}, 422, "inputs", "Field required"),
    ("/qa", {"inputs": "who sat ?"}, 422, "inputs", "Input should be a valid list"),
    ("/qa", item(question=5), 422, "inputs.0.question", "Input should be a valid string"),
    ("/qa", item(question="  \n"), 422, "inputs.0.question", "Value error, empty text"),
    ("/qa", item(questoin="who ?"), 422, "inputs.0.questoin", "Extra inputs are not permitted"),
    ("/qa", {"inputs": []}, 422, "inputs", "List should have at least 1 item"),
    ("/qa", {"inputs": GOOD["inputs"] * 5}, 413, "inputs", "5 inputs, more than the limit of 4"),
    ("/qa", item(context="x " * 300), 413, "inputs.0.context", "600 characters, more than the"),
    ("/qa", {"inputs": ["x" * 1990]}, 413, "body", "the body is over the limit of 2,000 bytes"),
    ("/qa?truncate=maybe", GOOD, 422, "truncate", "true or false, not 'maybe'"),
    (
        "/qa?truncate=false",
        item(question="the cat " * 40),
        413,
        "inputs.0.question",
        "80 tokens, more than the model's 8",
    ),
    (
        "/classify",
        GOOD,
        404,
        None,
        "/classify: a route of other models; this model serves /embed, /qa",
    ),
    ("/nothing", GOOD, 404, None, "/nothing: not a route; this model serves /embed, /qa"),
]


@pytest.mark.parametrize(
    "path, body, status, field, message", BAD, ids=[str(b[4])[:24] for b in BAD]
)
def test_bad_requests_name_the_field_and_the_server_goes_on(
    port, path, body, status, field, message
):
    got, _, answer = call(port, "POST", path, body, AUTH)
    assert got == status
    assert answer["error"]["status"] == status and answer["error"]["field"] == field
    assert answer["error"]["message"].startswith(message), answer["error"]["message"]
    assert call(port, "POST", "/qa", GOOD, AUTH)[0] == 200


def test_a_long_question_is_truncated_by_default(port):
    status, _, body = call(port, "POST", "/qa", item(question="the cat " * 40), AUTH)
    assert status == 200 and body["results"][0]["truncated"] is True


def test_the_key_guards_every_route_but_health(port):
    assert call(port, "GET", "/health")[:3:2] == (200, {"status": "ok"})
    for method, path, body in [
        ("GET", "/info", None),
        ("GET", "/metrics", None),
        ("POST", "/qa", GOOD),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            status, sent, answer = call(port, method, path, body, headers)
            assert status == 401 and sent["www-authenticate"] == "Bearer"
            assert answer["error"] == {
                "status": 401,
                "field": "authorization",
                "message": "a bearer token is required",
            }
    status, _, info = call(port, "GET", "/info", None, AUTH)
    assert status == 200 and info["auth"] is True and KEY not in json.dumps(info)
    assert call(port, "GET", "/", None)[0] == 200  # the page holds nothing of the model


def test_a_chunked_body_is_cut_at_the_limit(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    chunks = (b'{"inputs": ["' + b"x" * 500 + b'"' for _ in range(6))  # no Content-Length
    connection.request("POST", "/qa", body=chunks, headers=AUTH, encode_chunked=True)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413 and answer["error"]["field"] == "body"
    assert call(port, "POST", "/qa", GOOD, AUTH)[0] == 200


def test_a_wrong_method_is_json(port):
    status, _, answer = call(port, "GET", "/nothing", None, AUTH)
    assert status == 405 and answer["error"]["message"] == "GET /nothing: Method Not Allowed"
    status, _, answer = call(port, "PUT", "/info", None, AUTH)
    assert status == 405 and answer["error"]["message"] == "PUT /info: Method Not Allowed"


def test_a_model_directory_that_does_not_load_is_one_line(tmp_path, cli_error):
    (tmp_path / "config.json").write_text("{not json")
    line = cli_error(["serve", "--model", str(tmp_path), "--port", "1"])
    assert line.startswith(f"muppets: error: {tmp_path / 'config.json'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_error(["serve", "--model", str(empty)])
    assert line == (
        f"muppets: error: {empty}: not a checkpoint (no config.json) nor a run with checkpoints"
    )
