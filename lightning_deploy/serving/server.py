"""Serve a verified artifact over HTTP with LitServe: ``POST /predict`` in JSON, ``GET /health``.

:class:`ExportedModelAPI` is a ``litserve.LitAPI`` over :func:`lightning_deploy.runtime.loading`, for a
``LitServer`` of your own; :func:`serve` is what ``lightning-deploy serve`` runs. A request is
checked on its own when it is decoded (a bad one gets a 422 naming the leaf, the others in its
batch are answered); concurrent requests are stacked along dim 0 where that dim is the
model's dynamic batch. This module needs ``litserve`` (``pip install 'lightning-deploy[serve]'``).
"""

# No ``from __future__ import annotations`` here: LitServe hands decode_request's annotation
# (``dict``) to FastAPI as the body type, which must be the class, not a string.

import itertools
import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import Response

from lightning_deploy.artifact.resolve import resolve_artifact
from lightning_deploy.errors import ConfigurationError, LightningDeployError
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.runtime.loading import load
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.runtime.placement import choose_device
from lightning_deploy.serving.codec import RequestCodec, batch_axis

__all__ = ["ExportedModelAPI", "serve"]


@dataclass(frozen=True)
class _Rows:
    """One decoded request: its input leaves, in manifest order, and whether it came (and is answered) as .npz."""

    leaves: list[np.ndarray]
    npz: bool = False


@dataclass(frozen=True)
class _Answer:
    """One request's output leaves, in manifest order."""

    leaves: list[np.ndarray]
    npz: bool = False


@dataclass(frozen=True)
class _Refusal:
    """A request that is not answered with outputs: the HTTP status and what to tell the client."""

    status: int
    detail: str


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
    ) -> None:
        resolved = resolve_artifact(path, format)
        if resolved.entry.io == "native":
            raise ConfigurationError(
                f"{resolved.artifact.name} takes lists of any length (native I/O), which the JSON server does not"
                " decode. HINT: serve an artifact with flat I/O (onnx, or a traced torchscript)."
            )
        resolved.check_files()
        axis, reason = batch_axis(resolved.manifest)
        if max_batch_size > 1 and axis is None:
            raise ConfigurationError(
                f"max_batch_size={max_batch_size} stacks requests along dim 0, but {reason}."
                " HINT: serve with max_batch_size=1, or export with dynamic_batch=True."
            )
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.codec = RequestCodec(resolved.manifest)
        self.artifact = str(resolved.artifact)  # the file checked above, even where a manifest was named
        self.format: str = resolved.entry.format
        self.recorded_device: str | None = resolved.entry.device
        self.requested_device = device
        self.threads = threads
        self.model: ExportedModel | None = None

    def setup(self, device: str) -> None:
        """Open the artifact on this worker's device."""
        self.model = load(self.artifact, device=self.requested_device or device, threads=self.threads)

    def decode_request(self, request: dict | bytes) -> _Rows | _Refusal:
        """Check one request on its own; a bad one becomes a refusal, not an exception (it would fail its batch).

        FastAPI parses the body by its content type: JSON into a dict, anything else (an
        ``.npz``, sent as ``application/octet-stream``) as bytes; a body that is neither gets its 422.
        """
        try:
            npz = isinstance(request, bytes)
            leaves = self.codec.leaves_from_npz(request) if npz else self.codec.leaves(request)
            self.model.check_leaves(leaves)
        except LightningDeployError as err:
            return _Refusal(422, str(err))
        if self.max_batch_size > 1 and leaves[0].shape[0] == 0:
            return _Refusal(422, f"input '{self.model.input_names[0]}': no rows. HINT: send at least one row.")
        return _Rows(leaves, npz)

    def predict(self, x: Any) -> Any:
        """Run the requests (a list of them when batching), stacked where their shapes allow."""
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
        """The outputs as JSON (an .npz by leaf name for an .npz request), or the refusal's status and detail."""
        if isinstance(output, _Refusal):
            body = json.dumps({"detail": output.detail})
            return Response(content=body, status_code=output.status, media_type="application/json")
        if output.npz:
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
        return [_Answer([o[start:end] for o in outputs], item.npz) for item, (start, end) in zip(requests, bounds)]

    def _run_alone(self, item: _Rows | _Refusal) -> _Answer | _Refusal:
        if isinstance(item, _Refusal):
            return item
        try:
            return _Answer(self._run(item.leaves), item.npz)
        except Exception as err:  # noqa: BLE001 - answered as a 500 naming the runtime's error; the server goes on
            return _Refusal(500, f"the model failed on this request: {type(err).__name__}: {err}"[:1000])

    def _run(self, leaves: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.model.run_leaves(dict(zip(self.model.input_names, leaves)))
        return [np.asarray(outputs[name]) for name in self.model.output_names]


def serve(
    path: str | Path,
    port: int = 8000,
    host: str = "0.0.0.0",
    device: str | None = None,
    format: str | None = None,  # noqa: A002 - load()'s word
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve ``path`` until SIGTERM or Ctrl+C, then stop every worker process.

    LitServe stops on Ctrl+C; on SIGTERM its worker processes could outlive it, so SIGTERM is
    turned into the same orderly shutdown.
    """
    if workers < 1:
        raise ConfigurationError(f"--workers {workers}: give at least 1.")
    api = ExportedModelAPI(path, format, device, max_batch_size, batch_timeout)
    if device is None:  # load()'s default: the recorded device where this machine has it, else the CPU
        runtime = runtime_module(api.format)
        device = choose_device(None, api.recorded_device, api.format, runtime.has_device, runtime.MISSING_DEVICE_HINT)
        api.requested_device = device
    accelerator = "cuda" if device.startswith("cuda") else "cpu"
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level=log_level)
    except KeyboardInterrupt:  # a signal before LitServe's own handling starts
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for worker in getattr(server, "inference_workers", []):
            if worker.is_alive():
                worker.terminate()
                worker.join(5)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
