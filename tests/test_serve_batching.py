"""Dynamic batching: requests grouped by route within the token budget, oldest first; a full
queue answered 503 with Retry-After; a failed batch answered 500 and the worker goes on;
shutdown answers the requests in flight; /metrics counts it all. The model is a stand-in whose
batches wait on an Event, so every grouping here is decided, not timed."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from muppets.serve.app import Limits, build_app
from muppets.serve.batching import Batcher, QueueFull
from muppets.serve.loading import Served
from muppets.serve.metrics import Metrics
from muppets.serve.models import Route, Work, sub_batches
from tests.serve_helpers import call, running


class Gate:
    """A stand-in model: records each batch's work names and, while closed, holds the batch."""

    def __init__(self):
        self.batches, self.open, self.entered = [], threading.Event(), threading.Event()

    def run(self, works):
        self.entered.set()
        self.open.wait(30)
        names = [w.data["name"] for w in works]
        if "boom" in names:
            raise RuntimeError("the model broke")
        self.batches.append(names)
        return [{"results": [{"label": name}]} for name in names]


def wait_until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)


def work(name, route="a", tokens=10):
    return Work(route, tokens, {"name": name})


def test_batches_group_one_route_within_the_token_budget_oldest_first():
    gate = Gate()
    batcher = Batcher(
        lambda route, works: gate.run(works),
        max_tokens=30,
        max_wait=0.0,
        max_queue=16,
        metrics=Metrics(),
    )
    batcher.start()

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(work("a1")))
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 30)
        names = ["a2", "b1", "a3", "a4", "a5", "b2", "a6"]
        rest = [asyncio.ensure_future(batcher.submit(work(n, n[0]))) for n in names]
        await asyncio.sleep(0)  # every submit has queued
        assert batcher.depth() == 7
        gate.open.set()
        return await asyncio.gather(first, *rest)

    bodies = asyncio.run(scenario())
    batcher.close()
    assert [b["results"][0]["label"] for b in bodies] == [
        "a1",
        "a2",
        "b1",
        "a3",
        "a4",
        "a5",
        "b2",
        "a6",
    ]
    # a2..a4 fill the budget; b1 is then older than a5, so route b goes next
    assert gate.batches == [["a1"], ["a2", "a3", "a4"], ["b1", "b2"], ["a5", "a6"]]


def test_a_full_queue_refuses_and_a_failed_batch_fails_only_itself():
    gate = Gate()
    batcher = Batcher(
        lambda route, works: gate.run(works),
        max_tokens=10,
        max_wait=0.0,
        max_queue=2,
        metrics=Metrics(),
    )
    batcher.start()

    async def scenario():
        held = asyncio.ensure_future(batcher.submit(work("a1")))
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 30)
        queued = [asyncio.ensure_future(batcher.submit(work(n))) for n in ("boom", "a3")]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(work("a4"))
        gate.open.set()
        return await asyncio.gather(held, *queued, return_exceptions=True)

    first, broken, after = asyncio.run(scenario())
    batcher.close()
    assert first == {"results": [{"label": "a1"}]} and after == {"results": [{"label": "a3"}]}
    assert isinstance(broken, RuntimeError) and str(broken) == "the model broke"


def test_sub_batches_are_length_sorted_within_the_budget():
    assert sub_batches([3, 9, 5, 9, 1, 4], 18) == [[1, 3], [2, 5, 0], [4]]
    assert sub_batches([40, 2], 10) == [[0], [1]]  # longer than the budget: alone


@pytest.fixture
def gated_server():
    gate = Gate()

    def prepare(request, truncate):
        return Work("classify", 10, {"name": request.inputs[0]})

    served = Served({"classify": Route(prepare, gate.run)}, {"kind": "stand-in"})
    app = build_app(served, Limits(max_queue=1, max_batch_tokens=10, max_wait_ms=0))
    with running(app) as port:
        yield gate, app, port
    gate.open.set()


def test_overload_is_503_with_retry_after_and_metrics_count_it(gated_server):
    gate, app, port = gated_server
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(call, port, "POST", "/classify", {"inputs": ["one"]})
        gate.entered.wait(30)
        queued = pool.submit(call, port, "POST", "/classify", {"inputs": ["two"]})
        wait_until(lambda: app.state.batcher.depth() == 1)
        status, headers, body = call(port, "POST", "/classify", {"inputs": ["three"]})
        assert status == 503 and headers["retry-after"] == "1"
        assert body["error"] == {
            "status": 503,
            "field": None,
            "message": "the queue holds 1 requests: retry",
        }
        gate.open.set()
        answers = [held.result(), queued.result()]
    assert [(s, b["results"][0]["label"]) for s, _, b in answers] == [(200, "one"), (200, "two")]
    text = call(port, "GET", "/metrics")[2]
    assert 'muppets_requests_total{route="classify",status="200"} 2' in text
    assert 'muppets_requests_total{route="classify",status="503"} 1' in text
    assert 'muppets_batch_requests_bucket{le="1"} 2' in text
    assert "muppets_batch_requests_count 2" in text and "muppets_queue_depth 0" in text
    assert 'muppets_request_seconds_count{route="classify"} 3' in text


def test_a_failed_batch_is_500_and_the_server_goes_on(gated_server):
    gate, _, port = gated_server
    gate.open.set()
    status, _, body = call(port, "POST", "/classify", {"inputs": ["boom"]})
    assert status == 500
    assert body["error"]["message"] == "internal error: RuntimeError: the model broke"
    assert call(port, "POST", "/classify", {"inputs": ["fine"]})[0] == 200


def test_shutdown_answers_the_requests_in_flight():
    """uvicorn's SIGTERM handler sets should_exit: what is in flight is still answered."""
    import uvicorn

    gate = Gate()
    served = Served(
        {"classify": Route(lambda r, t: Work("classify", 1, {"name": "x"}), gate.run)}, {}
    )
    app = build_app(served, Limits(max_wait_ms=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, port, "POST", "/classify", {"inputs": ["x"]})
        gate.entered.wait(30)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.2)  # the server is shutting down while the batch runs
        gate.open.set()
        status, _, body = pending.result(30)
    thread.join(30)
    assert (status, body) == (200, {"results": [{"label": "x"}]})
    assert not thread.is_alive() and not app.state.batcher.thread.is_alive()


def test_a_lone_request_never_waits_and_an_arriving_one_is_waited_for():
    gate = Gate()
    gate.open.set()
    hour = 3600.0  # max_wait: only the arrival rule can let these batches go
    batcher = Batcher(lambda route, works: gate.run(works), 100, hour, 16, Metrics())
    batcher.start()

    async def scenario():
        alone = await asyncio.wait_for(batcher.submit(work("w0")), 30)
        with batcher.arrival() as arriving:  # w2 is being read while w1 queues
            first = asyncio.ensure_future(batcher.submit(work("w1")))
            await asyncio.sleep(0.05)
            assert not first.done()  # waited for w2
            second = asyncio.ensure_future(batcher.submit(work("w2"), arriving))
            both = await asyncio.wait_for(asyncio.gather(first, second), 30)
        return [alone, *both]

    bodies = asyncio.run(scenario())
    batcher.close()
    assert [b["results"][0]["label"] for b in bodies] == ["w0", "w1", "w2"]
    assert gate.batches == [["w0"], ["w1", "w2"]]


def test_a_cpu_forward_pass_holds_at_most_cpu_forward_tokens():
    """However large the batch budget, a CPU forward pass runs at most CPU_FORWARD_TOKENS padded
    tokens (faster there: bench/RESULTS.md), and each feature still gets its own row back."""
    import numpy as np
    import torch

    from muppets.data.task_features import Feature
    from muppets.serve.models import CPU_FORWARD_TOKENS, forward_features

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.shapes = torch.nn.Parameter(torch.zeros(1)), []

        def forward(self, input_ids, attention_mask, token_type_ids):
            self.shapes.append(tuple(input_ids.shape))
            return input_ids.float()[:, :1] + self.weight  # (B, 1): the feature's first id

    features = [
        Feature(n, np.full(256, n, dtype=np.int32), np.zeros(256, dtype=np.int8)) for n in range(20)
    ]
    model = Recorder()
    with torch.inference_mode():  # as the batcher runs it
        outputs = forward_features(model, "classification", features, 0, 8192)
    assert CPU_FORWARD_TOKENS == 2048
    assert model.shapes == [(8, 256), (8, 256), (4, 256)]
    assert [float(o[0]) for o in outputs] == [float(n) for n in range(20)]


def test_a_route_in_two_steps_finishes_on_the_event_loop_while_the_next_batch_runs():
    """run returning a callable: the worker goes on to the next batch and the event loop calls
    it (QA's decoding); a failing finish fails only its own batch."""
    gate, finished_on = Gate(), []

    def run(route, works):
        bodies = gate.run(works)  # the worker's share: held until the gate opens

        def finish():
            finished_on.append(threading.get_ident())
            if any(w.data["name"] == "bad" for w in works):
                raise ValueError("decoding failed")
            return [{"results": [{"label": b["results"][0]["label"].upper()}]} for b in bodies]

        return finish

    batcher = Batcher(run, max_tokens=20, max_wait=0.0, max_queue=16, metrics=Metrics())
    batcher.start()

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(work("a1")))
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 30)
        rest = [asyncio.ensure_future(batcher.submit(work(n))) for n in ("a2", "a3", "bad")]
        await asyncio.sleep(0)
        gate.open.set()
        found = await asyncio.gather(first, *rest, return_exceptions=True)
        return found, threading.get_ident()

    (one, two, three, broken), loop_thread = asyncio.run(scenario())
    batcher.close()
    assert gate.batches == [["a1"], ["a2", "a3"], ["bad"]]
    assert [b["results"][0]["label"] for b in (one, two, three)] == ["A1", "A2", "A3"]
    assert isinstance(broken, ValueError) and str(broken) == "decoding failed"
    assert finished_on == [loop_thread] * 3  # never on the worker thread
