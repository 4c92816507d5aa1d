"""What ``lightning-deploy serve`` adds around LitServe's processes: a guard, a watch, a drain.

LitServe starts its inference workers with multiprocessing's *spawn*: each one imports the main
script again. :func:`check_main_guard` refuses, before anything starts, a script whose import
would start the server a second time (a ``serve(...)`` call without ``if __name__ ==
"__main__":``): its workers would fail while bootstrapping and leave a server without workers.

:class:`WorkerWatch` starts a new inference worker when one dies (LitServe's ``restart_workers``
without its cost), logs it and counts it in ``/metrics``. On SIGTERM LitServe would close
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
import sys
import threading
import time
from typing import Any

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.serving.metrics import metrics

__all__ = ["MISSING_MAIN_GUARD", "WorkerWatch", "check_main_guard", "drain_on_sigterm"]

log = logging.getLogger("lightning_deploy.serving")

# LitServe names the processes that run uvicorn "LitServer-N" (litserve/server.py, _start_server).
_API_SERVER_PREFIX = "LitServer-"


MISSING_MAIN_GUARD = 3  # the exit status of a spawned process that found the server started by importing the script
# How long the spawned process may take to import the main script (the workers' imports are the same).
_PROBE_SECONDS = 60.0


def check_main_guard(owner: str) -> None:
    """Refuse to start where spawn's worker processes would start the server again; a second or so.

    In a process that spawn is starting (``_inheriting``: multiprocessing's own marker, the one its
    ``_check_not_importing_main`` reads), the call is the main script's, run again by its import:
    the process says so and exits with :data:`MISSING_MAIN_GUARD`. In the process the user started,
    one spawned process imports the main script as a worker would, before any port opens.

    Raises:
        ConfigurationError: where importing the main script again starts the server (or fails),
            naming the script and the fix.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        print(f"{owner} was called while a worker process was importing the main script: the script starts the"
              " server at import time. Put the call under `if __name__ == \"__main__\":`.", file=sys.stderr,
              flush=True)  # fmt: skip
        os._exit(MISSING_MAIN_GUARD)  # before any server or worker of its own starts
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script is None:  # python -c, a notebook: spawn imports no script
        return
    probe = multiprocessing.get_context("spawn").Process(target=_imported, name="lightning-deploy-main-guard")
    probe.start()
    probe.join(_PROBE_SECONDS)
    if probe.is_alive():
        probe.kill()
        probe.join()
    if probe.exitcode == MISSING_MAIN_GUARD:
        raise ConfigurationError(
            f"{owner}: {script} starts the server when it is imported, and every worker process imports it again"
            " (multiprocessing's spawn), so no worker could start. HINT: put the call under"
            ' `if __name__ == "__main__":`.'
        )
    if probe.exitcode != 0:
        raise ConfigurationError(
            f"{owner}: a worker process cannot import {script} (exit status {probe.exitcode}; its error is above)."
            " HINT: the workers import the main script again: make it importable without side effects."
        )


def _imported() -> None:
    """What the probe runs once the main script is imported: nothing."""


class WorkerWatch(threading.Thread):
    """Replace an inference worker that died, log it and count it: LitServe's ``restart_workers``, without its cost.

    LitServe's own restart (``restart_workers=True``) has every worker send a second message
    per request (which worker took it), which cost about a fifth of the requests per second of
    the digits MLP (``benchmarks/serving_overhead.py``). Here the server runs without it and
    without LitServe's monitor (which would stop the server when a worker dies), and this thread
    starts the replacement through LitServe's ``launch_single_inference_worker``. The requests a
    dead worker held are answered 504 by the request timeout (``guards.RequestTimeout``).
    """

    def __init__(self, server: Any, api: Any, interval_s: float = 0.5) -> None:
        super().__init__(name="lightning-deploy-worker-watch", daemon=True)
        self.server = server
        self.api = api
        self.interval_s = interval_s
        self.stopped = threading.Event()
        server._monitor_workers = False  # LitServe's monitor: no public switch; this thread does its work

    def run(self) -> None:
        """Until :attr:`stopped` is set (or the server shuts down), replace each worker that is no longer alive."""
        while not self.stopped.wait(self.interval_s):
            shutdown = getattr(self.server, "_shutdown_event", None)
            if shutdown is not None and shutdown.is_set():
                return
            workers = getattr(self.server, "inference_workers", None) or []
            for index, worker in enumerate(list(workers)):
                if worker.pid is None or worker.is_alive() or self.stopped.is_set():
                    continue
                replacement = self.server.launch_single_inference_worker(self.api, index)
                workers[index] = replacement
                metrics().worker_restarts.inc()
                log.warning("inference worker %d (pid %d) died (exit %s); now pid %d", index, worker.pid,
                            worker.exitcode, replacement.pid)  # fmt: skip


def drain_on_sigterm(server: Any, seconds: float) -> Any:
    """Install the SIGTERM handler of the serving process; returns the handler it replaces.

    Requests already accepted get up to ``seconds`` (the request timeout) to be answered. A
    SIGTERM before LitServe has started stops at once, like Ctrl+C. Processes forked from this
    one (LitServe's queue manager) inherit the handler and ignore the signal: the main process
    stops them in order.
    """
    owner = os.getpid()
    # A list, not a threading.Event: a second SIGTERM landing inside Event.set() (which takes a lock) would
    # deadlock the handler (seen with serve --engine ray's handler); list.append takes none.
    draining: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner or draining:
            return
        if getattr(server, "_shutdown_event", None) is None:
            raise KeyboardInterrupt
        draining.append(signum)
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
