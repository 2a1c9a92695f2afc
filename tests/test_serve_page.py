"""The page at / in headless Chromium, driven as a user would: type, click, read the rendered
result, which must be what the route answers. Skipped where `chromium` is not installed."""

import pytest

from bench.chromium_cdp import Browser, find_chromium
from muppets.serve.app import Limits
from tests.serve_helpers import call, running, save_qa, save_tagger, served_app
from tests.test_serve import CONTEXT, QUESTIONS

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
READY = "document.body.dataset.ready === 'true'"
DONE = "document.querySelector('#result').dataset.state === 'done'"
RESULT = "document.querySelector('#result').innerText"


def test_ask_a_question_and_read_the_highlighted_answer(tiny_tokenizer, tmp_path, one_thread):
    model = save_qa(tmp_path / "qa", tiny_tokenizer, QUESTIONS, CONTEXT)
    question = "what sat on the mat ?"
    with running(served_app(model)) as port, Browser() as browser:
        expected = call(
            port, "POST", "/qa", {"inputs": [{"question": question, "context": CONTEXT}]}
        )
        answer = expected[2]["results"][0]
        browser.open(f"http://127.0.0.1:{port}/", READY)
        tabs = browser.evaluate(
            "[...document.querySelectorAll('nav button')].map(b => b.textContent)"
        )
        assert tabs == ["Embed", "Question answering"]
        browser.click("nav button[data-route=qa]")
        browser.type("#form-qa input[name=question]", question)
        browser.type("#form-qa textarea[name=context]", CONTEXT)
        browser.click("#form-qa button[type=submit]")
        browser.wait(DONE)
        shown = browser.evaluate("document.querySelector('#result .answer').textContent")
        marked = browser.evaluate("document.querySelector('#result mark')?.textContent ?? null")
    if answer["answer"]:
        assert shown == answer["answer"] and marked == answer["answer"]
    else:
        assert shown == "no answer" and marked is None


def test_tag_entities_and_a_refused_key(tiny_tokenizer, tmp_path, one_thread):
    model = save_tagger(tmp_path / "tag", tiny_tokenizer)
    text = "the cat sat on the mat in the park"
    with running(served_app(model, Limits(api_key="k3y"))) as port, Browser() as browser:
        browser.open(
            f"http://127.0.0.1:{port}/",
            "document.querySelector('#model').textContent.startsWith('401')",
        )
        assert not browser.evaluate("document.querySelector('#key-row').hidden")
        browser.type("#key", "k3y")
        browser.evaluate("document.querySelector('#key').dispatchEvent(new Event('change'))")
        browser.wait(READY)
        browser.click("nav button[data-route=tag]")
        browser.type("#form-tag textarea[name=text]", text)
        browser.click("#form-tag button[type=submit]")
        browser.wait(DONE)
        marks = browser.evaluate(
            "[...document.querySelectorAll('#result mark')]"
            ".map(m => [m.className, m.firstChild.textContent])"
        )
        entities = call(port, "POST", "/tag", {"inputs": [text]}, {"Authorization": "Bearer k3y"})
    expected = [
        [e["type"], text[e["start"] : e["end"]]] for e in entities[2]["results"][0]["entities"]
    ]
    assert marks == expected and len(marks) > 1
