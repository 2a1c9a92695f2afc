"""The HTTP app (Starlette on uvicorn): the prediction routes the model allows, GET /health,
/info and /metrics, and the page at /.

Every answer that is not a result is JSON `{"error": {"status", "field", "message"}}`, the field
named as a path into the body (`inputs.0.question`), "body", a query parameter or null:

    400  body not UTF-8, malformed JSON          401  no or wrong bearer token (with --api-key)
    404  a route this model does not serve       413  body, batch or text over the limits
    422  a missing field, a wrong type, an empty text, an unknown key
    503  the queue is full (Retry-After)         500  the model failed (the server goes on)

Safe by default: the key is compared in constant time (hmac.compare_digest) and required on every
route but /health and the page's static files (which hold nothing of the model); the body is read
only up to --max-body-bytes; a request names texts, never a path.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from muppets.errors import MuppetsError
from muppets.serve.batching import Batcher, QueueFull
from muppets.serve.loading import Served
from muppets.serve.metrics import Metrics
from muppets.serve.models import RequestError
from muppets.serve.schemas import REQUESTS, texts_of

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {
    "/": ("index.html", "text/html"),
    "/page.js": ("page.js", "text/javascript"),
    "/page.css": ("page.css", "text/css"),
}
RETRY_AFTER_S = 1
log = logging.getLogger("muppets.serve")


@dataclass
class Limits:
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_inputs: int = 64  # texts (or questions) in one request
    max_text_chars: int = 20_000  # characters of one text (a QA context too)
    max_batch_tokens: int = 8192  # tokens (padded) the model runs at once
    max_wait_ms: float = 2.0  # how long the oldest request waits for others to join its batch
    max_queue: int = 256  # requests waiting; one more is answered 503


def error(status: int, field: str | None, message: str, headers: dict | None = None) -> Response:
    body = {"error": {"status": status, "field": field, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _authorized(request: Request, key: str | None) -> bool:
    if key is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), key.encode())


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(413, "body", f"the body is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a chunked body: stop reading at the limit
            raise RequestError(413, "body", f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(route: str, raw: bytes, limits: Limits):
    """The validated request, or a RequestError naming the field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, "body", f"not UTF-8: byte {raw[e.start]:#x} at {e.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        message = f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
        raise RequestError(400, "body", message) from None
    if not isinstance(value, dict):
        raise RequestError(422, "body", f"a JSON object is needed, not {type(value).__name__}")
    try:
        request = REQUESTS[route].model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, where, first["msg"]) from None
    if len(request.inputs) > limits.max_inputs:
        message = f"{len(request.inputs)} inputs, more than the limit of {limits.max_inputs}"
        raise RequestError(413, "inputs", message)
    for where, text in texts_of(route, request):
        if len(text) > limits.max_text_chars:
            message = f"{len(text):,} characters, more than the limit of {limits.max_text_chars:,}"
            raise RequestError(413, where, message)
    return request


def _truncate(request: Request) -> bool:
    value = request.query_params.get("truncate", "true").lower()
    if value not in ("true", "false", "1", "0"):
        raise RequestError(422, "truncate", f"true or false, not {value!r}")
    return value in ("true", "1")


def build_app(served: Served, limits: Limits, context=None) -> Starlette:
    """The app over a loaded model; `context` is the precision context the batches run in."""
    metrics = Metrics()

    def run(route: str, works: list):
        """The bodies, or for a route in two steps its `finish` still to call (batching.py)."""
        chosen = served.routes[route]
        if chosen.forward is None or chosen.finish is None:
            return chosen.run(works)
        outputs = chosen.forward(works)
        return lambda: chosen.finish(works, outputs)

    batcher = Batcher(
        run, limits.max_batch_tokens, limits.max_wait_ms / 1000, limits.max_queue, metrics, context
    )
    metrics.queue_depth = batcher.depth
    public = {k: v for k, v in asdict(limits).items() if k != "api_key"}
    info = {**served.info, "routes": sorted(served.routes), "limits": public}
    info["auth"] = limits.api_key is not None

    async def predict(request: Request) -> Response:
        route, started = request.path_params["route"], time.monotonic()
        response = await _answer(request, route)
        metrics.request(route, response.status_code, time.monotonic() - started)
        return response

    async def _answer(request: Request, route: str) -> Response:
        if not _authorized(request, limits.api_key):
            return error(401, "authorization", "a bearer token is required", _BEARER)
        if route not in served.routes:
            valid = ", ".join(f"/{r}" for r in sorted(served.routes))
            known = "a route of other models" if route in REQUESTS else "not a route"
            return error(404, None, f"/{route}: {known}; this model serves {valid}")
        try:
            with batcher.arrival() as arrival:  # the worker may wait for it to join its batch
                body = _parse(route, await _read_body(request, limits.max_body_bytes), limits)
                work = _prepare(route, body, request)
                return JSONResponse(await batcher.submit(work, arrival))
        except RequestError as e:
            return error(e.status, e.field, e.message)
        except QueueFull:
            message = f"the queue holds {limits.max_queue} requests: retry"
            return error(503, None, message, {"Retry-After": str(RETRY_AFTER_S)})
        except MuppetsError as e:  # raised by the model's run (non-finite outputs)
            return error(500, None, str(e))
        except Exception as e:  # the model failed: answered, logged, and the server goes on
            log.exception("batch failed")
            return error(500, None, f"internal error: {type(e).__name__}: {e}")

    def _prepare(route: str, body, request: Request):
        try:
            return served.routes[route].prepare(body, _truncate(request))
        except MuppetsError as e:  # the featurizer's refusal, e.g. no room for a context
            raise RequestError(422, None, getattr(e, "message", str(e))) from None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def show_info(request: Request) -> Response:
        if not _authorized(request, limits.api_key):
            return error(401, "authorization", "a bearer token is required", _BEARER)
        return JSONResponse(info)

    async def show_metrics(request: Request) -> Response:
        if not _authorized(request, limits.api_key):
            return error(401, "authorization", "a bearer token is required", _BEARER)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        name, media = PAGE_FILES[request.url.path]
        return Response((STATIC / name).read_bytes(), media_type=media)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, None, f"{request.method} {request.url.path}: {exc.detail}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.close()  # after uvicorn has answered the requests in flight

    routes = [
        HttpRoute("/health", health, methods=["GET"]),
        HttpRoute("/info", show_info, methods=["GET"]),
        HttpRoute("/metrics", show_metrics, methods=["GET"]),
        *[HttpRoute(path, page, methods=["GET"]) for path in PAGE_FILES],
        HttpRoute("/{route}", predict, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics
    return app


_BEARER = {"WWW-Authenticate": "Bearer"}
