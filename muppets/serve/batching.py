"""Dynamic batching: requests from many clients wait in one bounded queue; one worker thread takes
the oldest and, with it, the next requests of the same route until their tokens reach the budget,
and runs them as one batch. It waits for more (up to `max_wait` seconds after the oldest arrived)
only while another request is on its way in (read, validated, tokenized: `arrival()`): a lone
client never waits, and under load the requests that queued while a batch ran go together.

A route may split its batch in two (serve/models.py Route.forward / finish): `run` then returns
the rest of the work as a callable, which the event loop calls (QA's span decoding) while this
thread already runs the next batch's forward pass: the one thread the model has spends its time
in the model.

The worker is the only thread that runs the model (torch uses its own threads inside). A full
queue refuses at once (QueueFull: the app answers 503 with Retry-After) rather than growing
without limit. `close()` lets the worker finish what is queued, then stop: uvicorn's graceful
shutdown waits for the requests in flight, and those are answered before the worker ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from muppets.serve.metrics import Metrics
from muppets.serve.models import Work


class QueueFull(Exception):
    """The queue holds max_queue requests already."""


class Batcher:
    def __init__(
        self,
        run: Callable[[str, list[Work]], list[dict] | Callable[[], list[dict]]],
        max_tokens: int,
        max_wait: float,
        max_queue: int,
        metrics: Metrics,
        context: Callable[[], AbstractContextManager] | None = None,
    ):
        self.run, self.max_tokens, self.max_wait, self.max_queue = (
            run,
            max_tokens,
            max_wait,
            max_queue,
        )
        self.metrics, self.context = metrics, context
        self.pending: deque[tuple[Work, asyncio.Future, asyncio.AbstractEventLoop, float]] = deque()
        self.condition = threading.Condition()
        self.closed = False
        self.arriving = 0  # requests being read and prepared, about to be submitted
        self.thread = threading.Thread(target=self._work, name="muppets-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def depth(self) -> int:
        return len(self.pending)

    @contextmanager
    def arrival(self) -> Iterator[dict]:
        """Around reading and preparing a request: the worker may wait for it to join. Pass what
        it yields to `submit`, which counts the request as queued in the same step."""
        with self.condition:
            self.arriving += 1
        state = {"queued": False}
        try:
            yield state
        finally:
            if not state["queued"]:  # refused before it queued
                with self.condition:
                    self.arriving -= 1
                    self.condition.notify()

    async def submit(self, work: Work, arrival: dict | None = None) -> dict:
        """The response body of `work`, once its batch has run (or the batch's exception)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self.condition:
            if self.closed or len(self.pending) >= self.max_queue:
                raise QueueFull
            self.pending.append((work, future, loop, time.monotonic()))
            if arrival is not None:
                arrival["queued"], self.arriving = True, self.arriving - 1
            self.condition.notify()
        return await future

    def close(self, timeout: float = 60.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self.condition:
            self.closed = True
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _take(self) -> list:
        """Under the lock: the oldest request and the next ones of its route within the budget,
        once the budget is reached, no other request is arriving, the oldest has waited
        max_wait, or the queue is closing."""
        while True:
            while not self.pending and not self.closed:
                self.condition.wait()
            if not self.pending:
                return []
            route = self.pending[0][0].route
            chosen, tokens = [], 0
            for item in self.pending:
                if item[0].route != route:
                    continue
                if chosen and tokens + item[0].tokens > self.max_tokens:
                    break
                chosen.append(item)
                tokens += item[0].tokens
            waited = time.monotonic() - self.pending[0][3]
            full = tokens >= self.max_tokens or len(chosen) < self._same_route(route)
            if full or not self.arriving or waited >= self.max_wait or self.closed:
                for item in chosen:
                    self.pending.remove(item)
                return chosen
            self.condition.wait(self.max_wait - waited)

    def _same_route(self, route: str) -> int:
        return sum(item[0].route == route for item in self.pending)

    def _work(self) -> None:
        while True:
            with self.condition:
                chosen = self._take()
            if not chosen:
                return
            works = [item[0] for item in chosen]
            self.metrics.batch(len(works), sum(w.tokens for w in works))
            finish = None
            try:
                with torch.inference_mode(), self.context() if self.context else nullcontext():
                    bodies = self.run(works[0].route, works)
                if callable(bodies):  # a route in two steps: its `finish` runs on the event loop
                    finish, bodies = bodies, [None] * len(works)
                outcomes = [(body, None) for body in bodies]
            except Exception as error:  # answered to each request of the batch; the worker goes on
                outcomes = [(None, error)] * len(works)
            targets = [(future, loop) for _, future, loop, _ in chosen]
            if finish is not None:
                # The first request's loop decodes the batch while this thread runs the next one
                targets[0][1].call_soon_threadsafe(_finish, finish, targets)
            else:
                _wake(targets, outcomes)


def _wake(targets: list, outcomes: list, here: asyncio.AbstractEventLoop | None = None) -> None:
    """Each loop woken once with all its answers, not once a request (each wake-up is a write to
    the loop's self-pipe and a turn of the GIL between this thread and the loop's); the answers
    of `here`, the loop this runs on, settled at once."""
    settled: dict = {}
    for (future, loop), outcome in zip(targets, outcomes, strict=True):
        settled.setdefault(loop, []).append((future, *outcome))
    for loop, answers in settled.items():
        if loop is here:
            _settle(answers)
        else:
            loop.call_soon_threadsafe(_settle, answers)


def _finish(finish: Callable[[], list[dict]], targets: list) -> None:
    """On an event loop: the batch's bodies from the route's `finish`, then every answer."""
    try:
        outcomes = [(body, None) for body in finish()]
    except Exception as error:
        outcomes = [(None, error)] * len(targets)
    _wake(targets, outcomes, targets[0][1])


def _settle(answers: list[tuple[asyncio.Future, object, Exception | None]]) -> None:
    for future, body, error in answers:
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(body)
