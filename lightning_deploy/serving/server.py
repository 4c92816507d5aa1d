"""Serve a verified artifact over HTTP with LitServe: ``POST /predict`` in JSON, ``GET /health``, ``GET /metrics``.

:class:`ExportedModelAPI` is a ``litserve.LitAPI`` over :func:`lightning_deploy.runtime.loading`, for a
``LitServer`` of your own; :func:`serve` is what ``lightning-deploy serve`` runs: the API, the
guards of :mod:`~lightning_deploy.serving.guards` (body size, request timeout, JSON without a
content type), Prometheus metrics, replaced workers and a draining SIGTERM. A request is
checked on its own when it is decoded (a bad one gets a 422 naming the leaf, the others in its
batch are answered); concurrent requests are stacked along dim 0 where that dim is the
model's dynamic batch. This module needs ``litserve`` and ``prometheus_client``
(``pip install 'lightning-deploy[serve]'``).
"""

# No ``from __future__ import annotations`` here: LitServe hands decode_request's annotation
# (``dict``) to FastAPI as the body type, which must be the class, not a string.

import hmac
import importlib.util
import itertools
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException, Request, Response

from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX, manifest_path
from lightning_deploy.artifact.resolve import resolve_artifact
from lightning_deploy.errors import ConfigurationError, LightningDeployError
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.runtime.host import fingerprint
from lightning_deploy.runtime.loading import load
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.runtime.placement import choose_device, normalise_device
from lightning_deploy.serving import oip
from lightning_deploy.serving.codec import RequestCodec, batch_axis
from lightning_deploy.serving.guards import BodyLimit, JsonByDefault, RequestTimeout, api_key_from, parse_size
from lightning_deploy.serving.metrics import MetricsMiddleware, enable_multiprocess, metrics, metrics_endpoint
from lightning_deploy.serving.supervision import WorkerWatch, check_main_guard, drain_on_sigterm
from lightning_deploy.verification.rerun import check_at_start

__all__ = ["ExportedModelAPI", "serve"]

# Routes a probe or a scraper reaches without the API key.
OPEN_ROUTES = frozenset({"/health", "/metrics"})


# How a request came, and so how it is answered: JSON (None), an .npz (_NPZ), or the Open Inference Protocol (OipCall).
_NPZ = "npz"
_JSON = "application/json"


@dataclass(frozen=True)
class _Rows:
    """One decoded request: its input leaves, in manifest order, and the form it came in."""

    leaves: list[np.ndarray]
    form: Any = None


@dataclass(frozen=True)
class _Answer:
    """One request's output leaves, in manifest order, and the form to answer in."""

    leaves: list[np.ndarray]
    form: Any = None


@dataclass(frozen=True)
class _Refusal:
    """A request that is not answered with outputs: the HTTP status, what to tell the client, the form."""

    status: int
    detail: str
    form: Any = None


class ExportedModelAPI(ls.LitAPI):
    """A LitServe API that runs an exported artifact on JSON (or ``.npz``) requests.

    The artifact is checked when the API is made (the manifest entry is ``ok``, the sha256 of
    every file matches), so a server of it never starts on an unverified or changed file; each
    worker then opens it with :func:`~lightning_deploy.runtime.loading` in ``setup``.

    Args:
        path: an artifact or its manifest (``STEM.export.json``).
        format: with a manifest, which artifact (default: the one ``load`` picks).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None``: the device LitServe gives each
            worker (its ``accelerator``/``devices``).
        max_batch_size: LitServe's; above 1, concurrent requests are stacked along dim 0,
            which must be the dynamic batch of every input (checked here).
        batch_timeout: LitServe's: seconds to wait for a batch to fill.
        threads: ONNX Runtime's intra-op threads per worker (``load(threads=...)``).
        api_path: the route of predictions.
        api_key: the key every route but ``/health`` and ``/metrics`` needs in ``X-API-Key``;
            ``None``: LitServe's ``LIT_SERVER_API_KEY`` where set, else no key.
        name: the model's name in the Open Inference Protocol's routes; ``None``: the manifest's stem.

    Raises:
        LoadError: for an artifact ``load`` would refuse (missing, failed at export, changed).
        ConfigurationError: for ``max_batch_size`` > 1 on a model without a dynamic batch.

    Examples:
        >>> import litserve as ls  # doctest: +SKIP
        >>> api = ExportedModelAPI("checkpoints/best.export.json", max_batch_size=8)  # doctest: +SKIP
        >>> ls.LitServer(api, accelerator="cpu", workers_per_device=2).run(port=8000)  # doctest: +SKIP

    """

    def __init__(
        self,
        path: str | Path,
        format: str | None = None,  # noqa: A002 - load()'s word
        device: str | None = None,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        threads: int | None = None,
        api_path: str = "/predict",
        api_key: str | None = None,
        name: str | None = None,
    ) -> None:
        where = None if device is None else normalise_device(device)
        resolved = resolve_artifact(path, format, device=where, host=fingerprint)
        if resolved.entry.io == "native":
            raise ConfigurationError(
                f"{resolved.artifact.name} takes lists of any length (native I/O), which the JSON server does not"
                " decode. HINT: serve an artifact with flat I/O (onnx, or a traced torchscript)."
            )
        resolved.check_files()
        axis, reason = batch_axis(resolved.contract)
        if max_batch_size > 1 and axis is None:
            raise ConfigurationError(
                f"max_batch_size={max_batch_size} stacks requests along dim 0, but {reason}."
                " HINT: serve with max_batch_size=1, or export with dynamic_batch=True."
            )
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.codec = RequestCodec(resolved.contract)
        self.artifact = str(resolved.artifact)  # the file checked above, even where a manifest was named
        self.model_name = name or manifest_path(resolved.artifact).name.removesuffix(MANIFEST_SUFFIX)  # oip.py's NAME
        self.format: str = resolved.entry.format
        self.ranges = resolved.entry.ranges or {}  # the sizes it accepts: the OIP metadata says them
        self.recorded_device: str | None = resolved.entry.device
        self.requested_device = device
        self.threads = threads
        self.api_key = api_key or os.environ.get("LIT_SERVER_API_KEY") or None
        self.count_batches = False  # serve() turns it on with its /metrics; a LitServer of your own needs no prometheus
        self.model: ExportedModel | None = None

    def setup(self, device: str) -> None:
        """Open the artifact on this worker's device."""
        self.model = load(self.artifact, device=self.requested_device or device, threads=self.threads)

    def authorize(self, request: Request) -> None:
        """LitServe's hook on every route it serves: ``X-API-Key`` must hold the key, except on the open routes.

        LitServe's own ``LIT_SERVER_API_KEY`` check guards ``/health`` too, which a load
        balancer's probe cannot pass; defining this hook replaces it.
        """
        if self.api_key is None or request.url.path in OPEN_ROUTES:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header. HINT: send the server's key in X-API-Key.")

    def decode_request(self, request: dict | bytes) -> _Rows | _Refusal:
        """Check one request on its own; a bad one becomes a refusal, not an exception (it would fail its batch).

        FastAPI parses the body by its content type: JSON into a dict, anything else (an
        ``.npz``, sent as ``application/octet-stream``) as bytes; a body that is neither gets its 422.
        """
        form = _NPZ if isinstance(request, bytes) else None
        try:
            if isinstance(request, dict) and oip.OIP_KEY in request:  # from /v2/models/NAME/infer (oip.py)
                form = oip.OipCall(None, None)
                leaves, form = oip.decode(self.codec.contract, request[oip.OIP_KEY])
            else:
                leaves = self.codec.leaves_from_npz(request) if form == _NPZ else self.codec.leaves(request)
            self.model.check_leaves(leaves)
        except LightningDeployError as err:
            return _Refusal(422, str(err), form)
        if self.max_batch_size > 1 and leaves[0].shape[0] == 0:
            return _Refusal(422, f"input '{self.model.input_names[0]}': no rows. HINT: send at least one row.", form)
        return _Rows(leaves, form)

    def predict(self, x: Any) -> Any:
        """Run the requests (a list of them when batching), stacked where their shapes allow."""
        if self.count_batches:
            metrics().batch_size.observe(1 if self.max_batch_size == 1 else len(x))
        if self.max_batch_size == 1:
            return self._run_alone(x)
        answers: list[Any] = list(x)
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(x):
            if isinstance(item, _Rows):  # requests stack where every leaf agrees beyond dim 0
                groups.setdefault(tuple(leaf.shape[1:] for leaf in item.leaves), []).append(index)
        for members in groups.values():
            for index, answer in zip(members, self._run_stacked([x[i] for i in members])):
                answers[index] = answer
        return answers

    def encode_response(self, output: _Answer | _Refusal) -> Response:
        """The outputs as JSON, an .npz by leaf name or the protocol's tensors, as the request came; or the refusal."""
        if isinstance(output.form, oip.OipCall) and isinstance(output, _Refusal):  # the protocol's client errors: 400
            status = 400 if output.status == 422 else output.status
            return Response(content=json.dumps(oip.error(output.detail)), status_code=status, media_type=_JSON)
        if isinstance(output.form, oip.OipCall):
            body = oip.encode(self.codec.contract, output.leaves, self.model_name, output.form)
            return Response(content=json.dumps(body), media_type=_JSON)
        if isinstance(output, _Refusal):
            body = json.dumps({"detail": output.detail})
            return Response(content=body, status_code=output.status, media_type="application/json")
        if output.form == _NPZ:
            return Response(content=self.codec.npz_answer(output.leaves), media_type="application/octet-stream")
        return Response(content=json.dumps(self.codec.answer(output.leaves)), media_type="application/json")

    def _run_stacked(self, requests: Sequence[_Rows]) -> list[_Answer | _Refusal]:
        """One run for all ``requests``, split back by rows; one run each where that cannot be done."""
        if len(requests) == 1:
            return [self._run_alone(requests[0])]
        rows = [item.leaves[0].shape[0] for item in requests]
        stacked = [np.concatenate(parts) for parts in zip(*(item.leaves for item in requests))]
        try:
            outputs = self._run(stacked)
        except Exception:  # noqa: BLE001 - one request's values broke the run: find it by running each alone
            return [self._run_alone(item) for item in requests]
        if any(output.ndim == 0 or output.shape[0] != sum(rows) for output in outputs):
            return [self._run_alone(item) for item in requests]  # outputs not one row per input row
        bounds = itertools.pairwise(np.cumsum([0, *rows]))
        return [_Answer([o[start:end] for o in outputs], item.form) for item, (start, end) in zip(requests, bounds)]

    def _run_alone(self, item: _Rows | _Refusal) -> _Answer | _Refusal:
        if isinstance(item, _Refusal):
            return item
        try:
            return _Answer(self._run(item.leaves), item.form)
        except Exception as err:  # noqa: BLE001 - answered as a 500 naming the runtime's error; the server goes on
            return _Refusal(500, f"the model failed on this request: {type(err).__name__}: {err}"[:1000], item.form)

    def _run(self, leaves: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.model.run_leaves(dict(zip(self.model.input_names, leaves)))
        return [np.asarray(outputs[name]) for name in self.model.output_names]


def serve(
    path: str | Path,
    port: int = 8000,
    host: str = "127.0.0.1",
    device: str | None = None,
    format: str | None = None,  # noqa: A002 - load()'s word
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = True,
    timeout: float = 30.0,
    max_payload_size: str | int = "64MB",
    api_key_env: str | None = None,
    verify: bool = True,
    name: str | None = None,
) -> None:
    """Serve ``path`` until SIGTERM or Ctrl+C, then stop every worker process.

    Before any port is opened, the artifact is run on its golden samples on the device the
    workers will use (``verification.rerun.check_at_start``); where it does not reproduce,
    :class:`~lightning_deploy.errors.VerificationError` is raised and nothing is served.

    Args:
        path: an artifact or its manifest.
        port: the port to listen on.
        host: ``127.0.0.1`` (this machine only, the default) or ``0.0.0.0``/``::`` to listen on
            every interface (put a key or a proxy in front first).
        timeout: seconds a request may take before it is answered 504 (LitServe's default, 30);
            also how long SIGTERM waits for requests in flight.
        max_payload_size: bodies larger than this are answered 413 unread (``64MB``, ``1GiB``, bytes).
        api_key_env: the environment variable holding the API key (``X-API-Key`` on every route
            but ``/health`` and ``/metrics``); None: LitServe's ``LIT_SERVER_API_KEY`` where set.
        device: as :class:`ExportedModelAPI`'s; None: the recorded device where this machine has it.
        format: with a manifest, which artifact.
        max_batch_size: above 1, concurrent requests are stacked along dim 0.
        batch_timeout: seconds to wait for a batch to fill.
        workers: inference worker processes, each with the model.
        log_level: uvicorn's and LitServe's log level.
        access_log: uvicorn's log line per request.
        verify: run the golden check first; ``False`` skips it (and the log says so).
        name: the model's name in the Open Inference Protocol's routes (default: the manifest's stem).

    A worker that dies is replaced (``supervision.WorkerWatch``); the requests it held are
    answered 504 at the timeout.
    """
    check_main_guard("lightning_deploy.serving.server.serve")
    if workers < 1:
        raise ConfigurationError(f"--workers {workers}: give at least 1.")
    if timeout <= 0:
        raise ConfigurationError(f"--timeout {timeout}: give a number of seconds above 0.")
    max_bytes = parse_size(max_payload_size)
    api = ExportedModelAPI(
        path, format, device, max_batch_size, batch_timeout, api_key=api_key_from(api_key_env), name=name
    )
    if device is None:  # load()'s default: the recorded device where this machine has it, else the CPU
        runtime = runtime_module(api.format)
        device = choose_device(None, api.recorded_device, api.format, runtime.has_device, runtime.MISSING_DEVICE_HINT)
        api.requested_device = device
    if verify:
        print(check_at_start(path, api.format, device, "lightning-deploy serve"), file=sys.stderr, flush=True)
    else:
        print(f"lightning-deploy serve: --no-verify: {api.format} is served without the golden check",
              file=sys.stderr, flush=True)  # fmt: skip
    if importlib.util.find_spec("prometheus_client") is None:  # found, not imported: see enable_multiprocess
        raise ConfigurationError("serve needs prometheus_client. HINT: pip install 'lightning-deploy[serve]'.")
    metrics_folder = enable_multiprocess()
    metrics()  # the restart counter of this process, made once its multiprocess folder is set
    api.count_batches = True
    guards = [(JsonByDefault, {}), (RequestTimeout, {"seconds": timeout}), (BodyLimit, {"max_bytes": max_bytes})]
    routes = {api.api_path, *OPEN_ROUTES}  # the metrics' routes; the protocol's are added once the server has an app
    server = ls.LitServer(
        api,
        accelerator="cuda" if device.startswith("cuda") else "cpu",
        devices=1,
        workers_per_device=workers,
        timeout=timeout,
        restart_workers=False,  # WorkerWatch replaces a dead worker (LitServe's restart costs a message a request)
        middlewares=[*guards, (MetricsMiddleware, {"routes": routes})],  # the last one added sees every answer
    )
    routes.update(oip.add_litserve_routes(server, api))
    server.uvicorn_graceful_timeout = timeout  # how long uvicorn waits for requests in flight when stopped
    server.app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    watch = WorkerWatch(server, api)
    watch.start()
    previous = drain_on_sigterm(server, timeout)
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level=log_level, access_log=access_log)
    except KeyboardInterrupt:  # a signal before LitServe's own handling starts
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        watch.stopped.set()
        for worker in getattr(server, "inference_workers", []):
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        if metrics_folder:
            shutil.rmtree(metrics_folder, ignore_errors=True)
