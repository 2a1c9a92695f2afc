"""`muppets serve --model DIR`: load the model once and answer over HTTP until SIGTERM / Ctrl-C.

uvicorn's graceful shutdown stops accepting, answers the requests in flight (their batches run),
then the worker stops. The API key comes from --api-key or $MUPPETS_API_KEY; it is never written
to disk or shown by /info.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from muppets.errors import ConfigError
from muppets.training.options import device_option, option

API_KEY_VARIABLE = "MUPPETS_API_KEY"


@dataclass
class ServeConfig:
    model: str = option("model directory: fine-tuned, pretrained (BERT family) or ELMo", "")
    host: str = option("address to bind (0.0.0.0 to listen on every interface)", "127.0.0.1")
    port: int = option("TCP port", 8000)
    api_key: str | None = option(f"bearer token for every route but /health (${API_KEY_VARIABLE})")
    max_body_bytes: int = option("largest request body", 1_000_000)
    max_inputs: int = option("most texts (questions) in one request", 64)
    max_text_chars: int = option("most characters in one text (a QA context too)", 20_000)
    max_batch_tokens: int = option("tokens (padded) the model runs at once", 8192)
    max_wait_ms: float = option("how long a request waits for others to join its batch", 2.0)
    max_queue: int = option("requests that may wait; one more is answered 503", 256)
    precision: str = option("auto (bf16 where the hardware has it), fp32 or bf16", "auto")
    threads: int = option("torch threads (0: torch's default)", 0)
    device: str = device_option()

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a model directory)")
        positive = ("port", "max_body_bytes", "max_inputs", "max_text_chars")
        for name in (*positive, "max_batch_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


def build(config: ServeConfig):
    """(app, description line) of the model in config: loaded here, once."""
    import torch

    from muppets.serve.app import Limits, build_app
    from muppets.serve.loading import load_served
    from muppets.training.device import pick_device
    from muppets.training.precision import autocast, describe, resolve_precision

    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    served = load_served(config.model, device, config.max_batch_tokens, config.max_inputs)
    if served.info.get("backend") == "onnxruntime":  # the graph's own arithmetic, on the CPU
        device, precision = torch.device("cpu"), "fp32"
    limits = Limits(
        api_key=config.api_key or os.environ.get(API_KEY_VARIABLE) or None,
        max_body_bytes=config.max_body_bytes,
        max_inputs=config.max_inputs,
        max_text_chars=config.max_text_chars,
        max_batch_tokens=config.max_batch_tokens,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
    )
    served.info["precision"] = precision
    app = build_app(served, limits, lambda: autocast(precision, device))
    routes = ", ".join(f"/{r}" for r in sorted(served.routes))
    return app, f"serve: {config.model} ({routes}); {describe(precision, device)}"


def serve(config: ServeConfig) -> None:
    import uvicorn

    app, line = build(config)
    print(line, flush=True)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        has_key = bool(config.api_key or os.environ.get(API_KEY_VARIABLE))
        print(f"serve: on {config.host}, {'with' if has_key else 'WITHOUT'} an API key", flush=True)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )
