"""What ``lightning-deploy serve`` adds around LitServe's processes: replaced workers counted, SIGTERM drained.

LitServe (``restart_workers=True``) starts a new inference worker when one dies; :class:`WorkerWatch`
notices the new process, logs it and counts it in ``/metrics``. On SIGTERM LitServe would close
its queues first and stop the HTTP servers after, so requests in flight could not be answered:
:func:`drain_on_sigterm` stops the HTTP servers first (uvicorn's graceful shutdown: no new
connections, the accepted requests answered while the workers still run), then LitServe's own
shutdown takes the rest down.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from lightning_deploy.serving.metrics import metrics

__all__ = ["WorkerWatch", "drain_on_sigterm"]

log = logging.getLogger("lightning_deploy.serving")

# LitServe names the processes that run uvicorn "LitServer-N" (litserve/server.py, _start_server).
_API_SERVER_PREFIX = "LitServer-"


class WorkerWatch(threading.Thread):
    """Poll the server's inference workers; a new process where one was is a worker replaced after it died."""

    def __init__(self, server: Any, interval_s: float = 0.5) -> None:
        super().__init__(name="lightning-deploy-worker-watch", daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        """Until :attr:`stopped` is set, compare each worker's pid with the last one seen."""
        known: dict[int, int] = {}
        while not self.stopped.wait(self.interval_s):
            for index, worker in enumerate(list(getattr(self.server, "inference_workers", None) or [])):
                if worker.pid is None:
                    continue
                if known.get(index, worker.pid) != worker.pid:
                    metrics().worker_restarts.inc()
                    log.warning("inference worker %d (pid %d) died; now pid %d", index, known[index], worker.pid)
                known[index] = worker.pid


def drain_on_sigterm(server: Any, seconds: float) -> Any:
    """Install the SIGTERM handler of the serving process; returns the handler it replaces.

    Requests already accepted get up to ``seconds`` (the request timeout) to be answered. A
    SIGTERM before LitServe has started stops at once, like Ctrl+C. Processes forked from this
    one (LitServe's queue manager) inherit the handler and ignore the signal: the main process
    stops them in order.
    """
    owner = os.getpid()
    draining = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner or draining.is_set():
            return
        if getattr(server, "_shutdown_event", None) is None:
            raise KeyboardInterrupt
        draining.set()
        threading.Thread(target=_drain, args=(server, seconds), name="lightning-deploy-drain", daemon=True).start()

    return signal.signal(signal.SIGTERM, handler)


def _drain(server: Any, seconds: float) -> None:
    api_servers = [p for p in multiprocessing.active_children() if p.name.startswith(_API_SERVER_PREFIX)]
    log.warning("SIGTERM: answering the requests in flight (up to %g s), then stopping", seconds)
    for process in api_servers:
        process.terminate()  # uvicorn's graceful shutdown
    deadline = time.monotonic() + seconds
    for process in api_servers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
    server._shutdown_event.set()  # LitServe's own shutdown: queues, workers, manager
