"""Ray Serve: the artifact of a manifest as a Ray Serve application, its replicas spread over a Ray cluster.

The same contract as ``lightning-deploy serve`` (``server.py``): ``POST /predict`` with JSON or
``.npz``, the model's own structured answer, 4xx naming the bad input, ``X-API-Key``, ``/health``,
and the Open Inference Protocol's routes (``oip.py``). Each replica holds one
``ExportedModelAPI`` (the same decoding, checks and encoding as LitServe's workers) with the
artifact opened by ``load()``; concurrent requests are stacked by ``@serve.batch`` where
``max_batch_size`` > 1. Requests, latencies and replica counts are Ray Serve's own metrics.

:func:`app` builds the application in Python; :func:`build` is the application builder that
``serve run``/``serve build`` config files name (``import_path:
lightning_deploy.serving.ray:build``, ``args: {path: ..., replicas: 2}``), which is what KubeRay's
RayService takes.
"""

# No ``from __future__ import annotations``: Ray pickles the deployment class by value, and FastAPI
# resolves a route's string annotations in its globals, which then lack names used only in annotations.
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from ray import serve

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.serving import oip
from lightning_deploy.serving.server import ExportedModelAPI

__all__ = ["APP_NAME", "SHUTDOWN_WAIT_S", "ExportedModelDeployment", "app", "build", "connect", "run"]

APP_NAME = "lightning-deploy"  # the Serve application ``run`` deploys and, on a shared cluster, deletes at the end
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTDOWN_WAIT_S = 10.0  # for Serve to drain and stop its actors before Ray is stopped under it
_JSON_TYPES = ("", "application/json", "application/x-www-form-urlencoded")  # as JsonByDefault reads them


@serve.deployment
@serve.ingress()
class ExportedModelDeployment:
    """One replica: an ``ExportedModelAPI`` with the artifact opened, behind a FastAPI app built on the replica."""

    def __init__(
        self,
        path: str,
        format: str | None = None,  # noqa: A002 - load()'s word
        device: str | None = None,
        max_batch_size: int = 1,
        batch_wait_timeout_s: float = 0.0,
        api_key: str | None = None,
        name: str | None = None,
    ) -> None:
        self.api = ExportedModelAPI(path, format, device, max_batch_size, batch_wait_timeout_s, api_key=api_key,
                                    name=name)  # fmt: skip
        self.api.setup(device or "cpu")
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's routes: ``/predict``, ``/health`` and the protocol's."""
        app = FastAPI()
        keyed = [Depends(self.api.authorize)]
        app.add_api_route("/predict", self._predict_request, methods=["POST"], dependencies=keyed)
        app.add_api_route("/health", self._health, methods=["GET"])

        async def ready(request: Request) -> bool:
            return self.api.model is not None

        oip.add_routes(app, self.api, self._predict, ready, keyed)
        return app

    async def _health(self) -> Response:
        return Response(content="ok")

    async def _predict_request(self, request: Request) -> Response:
        """Parse the body as LitServe's route does (JSON into a dict, anything else as bytes), then predict."""
        declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if declared in _JSON_TYPES:
            try:
                return await self._predict(await request.json())
            except ValueError:
                return Response(content='{"detail": "the body is not JSON."}', status_code=422,
                                media_type="application/json")  # fmt: skip
        return await self._predict(await request.body())

    async def _predict(self, body: Any) -> Response:
        """Decode one request on its own, run it (stacked with others where batching), encode its answer."""
        item = self.api.decode_request(body)
        answer = await self._batched(item) if self.api.max_batch_size > 1 else await asyncio.to_thread(
            self.api.predict, item)  # fmt: skip
        return self.api.encode_response(answer)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)  # set per application in __init__
    async def _batched(self, items: list[Any]) -> list[Any]:
        return await asyncio.to_thread(self.api.predict, items)


def app(
    path: str,
    replicas: int | Mapping[str, Any] = 1,
    format: str | None = None,  # noqa: A002 - load()'s word
    device: str | None = None,
    max_batch_size: int = 1,
    batch_wait_timeout_s: float = 0.0,
    api_key: str | None = None,
    name: str | None = None,
    num_cpus: float = 0.5,
) -> serve.Application:
    """The Ray Serve application of ``path`` (an artifact or its manifest).

    Args:
        path: an artifact or its manifest.
        replicas: how many replicas, or Ray Serve's autoscaling config (``{"min_replicas": 1,
            "max_replicas": 4, ...}``).
        format: with a manifest, which artifact (default: the one ``load()`` picks).
        device: where each replica runs it; ``"cuda"`` gives each replica a GPU.
        max_batch_size: above 1, concurrent requests to a replica are stacked along dim 0.
        batch_wait_timeout_s: how long a replica waits for a batch to fill.
        api_key: the key ``/predict``, metadata and infer need in ``X-API-Key``.
        name: the model's name in the protocol's routes (default: the manifest's stem).
        num_cpus: the CPUs Ray reserves per replica (a fraction leaves room for Ray Data's tasks).
    """
    if isinstance(replicas, int) and replicas < 1:
        raise ConfigurationError(f"--replicas {replicas}: give at least 1.")
    scale = {"num_replicas": replicas} if isinstance(replicas, int) else {"autoscaling_config": dict(replicas)}
    gpus = 1 if device is not None and device.startswith("cuda") else 0
    deployment = ExportedModelDeployment.options(
        **scale, ray_actor_options={"num_cpus": num_cpus, "num_gpus": gpus},
        max_ongoing_requests=max(8, 2 * max_batch_size),
    )  # fmt: skip
    # absolute: the replicas start in other working directories, on other nodes
    return deployment.bind(os.path.abspath(path), format, device, max_batch_size, batch_wait_timeout_s, api_key, name)


def build(args: Mapping[str, Any]) -> serve.Application:
    """The application builder a Serve config file names: ``args`` are :func:`app`'s keyword arguments."""
    return app(**dict(args))


def run(
    path: str,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    verify: bool = True,
    **options: Any,
) -> None:
    """Deploy :func:`app` on a Ray cluster and serve until SIGTERM or Ctrl+C (``lightning-deploy serve --engine ray``).

    ``address`` is a running cluster's (``ray start --head`` printed it); without one, a Ray
    instance of this machine is started for the time of the call, on the loopback where ``host``
    is ``127.0.0.1`` (Ray would otherwise take the machine's interface address). The artifact's
    golden check runs here first, as ``lightning-deploy serve``'s does; ``options`` are :func:`app`'s.
    """
    import ray

    from lightning_deploy.verification.rerun import check_at_start

    api_format = ExportedModelAPI(path, options.get("format"), options.get("device"), api_key=None).format
    if verify:
        print(check_at_start(path, api_format, options.get("device") or "cpu", "lightning-deploy serve --engine ray"),
              file=sys.stderr, flush=True)  # fmt: skip
    connect(address, loopback=host == "127.0.0.1")
    # A flag, not a threading.Event: a second signal landing inside Event.set() (which takes a lock) deadlocked.
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _: stopping.append(number)) for sig in _STOP_SIGNALS}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app(path, replicas, **options), name=APP_NAME, route_prefix="/", blocking=False)
        print(f"lightning-deploy serve --engine ray: {replicas} replica(s) at http://{host}:{port}", file=sys.stderr,
              flush=True)  # fmt: skip
        while not stopping:
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Serve's own stop, bounded: where the signal reached Ray's processes too (systemd's control group,
        # `kill -- -PGID`), Serve waited its 30 s for a controller already gone; ray.shutdown() stops the rest.
        stop = serve.shutdown if address is None else lambda: serve.delete(APP_NAME)  # a shared cluster keeps Serve
        stopper = threading.Thread(target=stop, daemon=True)
        stopper.start()
        stopper.join(SHUTDOWN_WAIT_S)
        ray.shutdown()


def connect(address: str | None, loopback: bool = True) -> None:
    """Join the Ray cluster at ``address``; without one, start Ray on this machine, on the loopback if ``loopback``.

    Ray otherwise gives its processes the machine's interface address (``DESIGN.md``).
    """
    import ray

    if ray.is_initialized():
        return
    if address is None and loopback:
        # Ray reads this switch once, when it is imported (which happened before this call): the environment
        # for the processes it starts, its constant for this one. Setting only the environment left the
        # driver, GCS and agents talking over the interface address (seen with ss, ray 2.60).
        from ray._private import ray_constants

        os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
