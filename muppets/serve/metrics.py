"""What GET /metrics shows, in Prometheus' text format (version 0.0.4): requests by route and
status, request latencies, batch sizes (requests and tokens), queue depth and refusals.

Kept by hand (a lock and a few dicts): a handful of series do not need a client library.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536)


class Histogram:
    """Cumulative buckets, sum and count of observed values (one series)."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.sum, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.sum, self.count = self.sum + value, self.count + 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {total}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.count}"]


class Metrics:
    def __init__(self, queue_depth: Callable[[], int] = lambda: 0):
        self.lock = threading.Lock()
        self.queue_depth = queue_depth
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_requests = Histogram(BATCH_BUCKETS)
        self.batch_tokens = Histogram(TOKEN_BUCKETS)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[route, status] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, n_requests: int, n_tokens: int) -> None:
        with self.lock:
            self.batch_requests.observe(n_requests)
            self.batch_tokens.observe(n_tokens)

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP muppets_requests_total Requests answered, by route and HTTP status.",
                "# TYPE muppets_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'muppets_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP muppets_request_seconds Time from the request's arrival to its answer.",
                "# TYPE muppets_request_seconds histogram",
            ]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("muppets_request_seconds", f'route="{route}"')
            lines += [
                "# HELP muppets_batch_requests Requests run together in one batch.",
                "# TYPE muppets_batch_requests histogram",
                *self.batch_requests.lines("muppets_batch_requests", ""),
                "# HELP muppets_batch_tokens Tokens (features) run together in one batch.",
                "# TYPE muppets_batch_tokens histogram",
                *self.batch_tokens.lines("muppets_batch_tokens", ""),
                "# HELP muppets_queue_depth Requests waiting for the model now.",
                "# TYPE muppets_queue_depth gauge",
                f"muppets_queue_depth {self.queue_depth()}",
            ]
        return "\n".join(lines) + "\n"
