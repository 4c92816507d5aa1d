"""Prometheus metrics of a running server, summed over its processes: ``GET /metrics``.

The HTTP side (requests by route and status, latency) runs in LitServe's API server processes,
batch sizes in the inference workers, worker restarts in the main process; prometheus_client's
multiprocess mode (one directory of files, ``PROMETHEUS_MULTIPROC_DIR``) adds them up at each
scrape. The mode is chosen when prometheus_client is first imported, so :func:`enable_multiprocess`
runs before anything here touches it.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from lightning_deploy.serving.guards import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MetricsMiddleware", "enable_multiprocess", "metrics", "metrics_endpoint", "scrape"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def enable_multiprocess() -> str | None:
    """Point prometheus_client at a fresh directory for this server's processes; returns it (None: the user's own).

    Call before the worker processes start: they inherit the environment variable.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    folder = tempfile.mkdtemp(prefix="lightning-deploy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


@dataclass(frozen=True)
class _Metrics:
    requests: Any
    latency: Any
    batch_size: Any
    worker_restarts: Any


@functools.cache
def metrics() -> _Metrics:
    """The server's metric objects, made on first use in each process (after :func:`enable_multiprocess`)."""
    from prometheus_client import Counter, Histogram

    prefix = "lightning_deploy_"
    return _Metrics(
        requests=Counter(f"{prefix}requests", "HTTP requests answered, by route and status", ["route", "status"]),
        latency=Histogram(f"{prefix}request_seconds", "Time to answer an HTTP request, by route", ["route"]),
        batch_size=Histogram(f"{prefix}batch_size", "Requests run together by a worker", buckets=_BATCH_BUCKETS),
        worker_restarts=Counter(f"{prefix}worker_restarts", "Inference workers replaced after they died"),
    )


def scrape() -> tuple[bytes, str]:
    """The Prometheus text exposition of every process's metrics, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics()  # declared here too, so a scrape before the first request lists them at zero
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_endpoint() -> Any:
    """``GET /metrics``: :func:`scrape` as a FastAPI response."""
    from fastapi import Response

    body, content_type = scrape()
    return Response(content=body, media_type=content_type)


class MetricsMiddleware:
    """Count each HTTP request by route (the known ones; others as ``other``) and status, and time it."""

    def __init__(self, app: ASGIApp, routes: AbstractSet[str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request and record its route, status and time, whatever happens to it."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = 500  # what the client sees when the app fails before answering
        started = time.perf_counter()

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            measured = metrics()
            measured.requests.labels(route, str(status)).inc()
            measured.latency.labels(route).observe(time.perf_counter() - started)
