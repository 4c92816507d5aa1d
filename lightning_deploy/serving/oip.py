"""The Open Inference Protocol (KServe v2) beside the server's own routes: what Triton's and KServe's clients speak.

``lightning-deploy serve`` answers, for its model ``NAME`` (the artifact's stem)::

    GET  /v2                      the server's metadata
    GET  /v2/health/live          200 while the server runs
    GET  /v2/health/ready         200 once every inference worker is ready
    GET  /v2/models/NAME          the model's metadata: tensors by the manifest's leaf names, datatypes, shapes
    GET  /v2/models/NAME/ready    as /v2/health/ready
    POST /v2/models/NAME/infer    input tensors by leaf name -> output tensors by leaf name

An infer request goes through the same worker as ``/predict`` (marked by :data:`OIP_KEY`, a key
no ``forward`` parameter can have), checked by the same rules; a bad one is answered 400 with
the protocol's ``{"error": ...}``. Tensor data travels as JSON (the protocol's binary extension
is refused by name). Dynamic dims are ``-1`` in the metadata, as in the Triton entry.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from lightning_deploy.artifact.contract import IOContract, Tensors
from lightning_deploy.errors import StructureError

__all__ = [
    "DATATYPES",
    "OIP_KEY",
    "OipCall",
    "add_litserve_routes",
    "add_routes",
    "decode",
    "encode",
    "error",
    "metadata",
]

OIP_KEY = "v2:infer"  # the body of an infer request, as the worker receives it: {OIP_KEY: body}
# The manifest's dtype names -> the protocol's datatypes (Triton's config types are these with TYPE_ before them).
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
}


class OipCall:
    """What an infer request asks besides its inputs: its ``id`` and the outputs it wants (``None``: all)."""

    __slots__ = ("id", "outputs")

    def __init__(self, request_id: str | None, outputs: list[str] | None) -> None:
        self.id, self.outputs = request_id, outputs


def decode(contract: IOContract, body: Any) -> tuple[list[np.ndarray], OipCall]:
    """The input leaves of an infer request, in the contract's order, and what it asks.

    Raises:
        StructureError: naming the tensor and what is wrong (missing, unknown, datatype, shape, data).
    """
    tensors = body.get("inputs") if isinstance(body, Mapping) else None  # the request's, not a manifest's
    if not isinstance(tensors, list):
        raise StructureError('an infer request is a JSON object with "inputs": a list of tensors.')
    given: dict[str, Any] = {}
    for tensor in tensors:
        if not isinstance(tensor, Mapping) or not isinstance(tensor.get("name"), str):
            raise StructureError('every input is an object with "name", "shape", "datatype" and "data".')
        given[tensor["name"]] = tensor
    names = contract.inputs.names
    missing, unknown = [n for n in names if n not in given], [n for n in given if n not in names]
    if missing or unknown:
        raise StructureError(f"inputs: missing {missing}, unknown {unknown}; the model takes {names}.")
    leaves = [_array(leaf.name, leaf.dtype, given[leaf.name]) for leaf in contract.inputs.leaves]
    wanted = body.get("outputs")
    requested = None  # none asked for: every output
    if wanted:
        requested = [o.get("name") if isinstance(o, Mapping) else o for o in wanted] if isinstance(wanted, list) else [
            wanted]  # fmt: skip
        unknown = [n for n in requested if n not in contract.outputs.names]
        if unknown:
            raise StructureError(f"outputs: unknown {unknown}; the model returns {contract.outputs.names}.")
    request_id = body.get("id")
    return leaves, OipCall(str(request_id) if request_id is not None else None, requested)


def encode(contract: IOContract, leaves: Sequence[np.ndarray], model: str, call: OipCall) -> dict[str, Any]:
    """The infer response: the output leaves (all, or those asked for) by name, as JSON data in row-major order."""
    wanted = call.outputs or contract.outputs.names
    by_name = dict(zip(contract.outputs.names, leaves))
    outputs = [{"name": name, "datatype": DATATYPES.get(by_name[name].dtype.name, by_name[name].dtype.name.upper()),
                "shape": list(by_name[name].shape), "data": np.asarray(by_name[name]).ravel().tolist()}
               for name in wanted]  # fmt: skip
    answer: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": outputs}
    return {**answer, "id": call.id} if call.id is not None else answer


def error(message: str) -> dict[str, str]:
    """The protocol's error body."""
    return {"error": message}


def metadata(contract: IOContract, model: str, platform: str, ranges: Mapping[str, Any]) -> dict[str, Any]:
    """The model's metadata: every tensor by leaf name, its datatype and its shape (``-1`` where dynamic).

    Where the artifact accepts only some sizes of a dynamic dim, ``parameters.ranges`` says them
    (the manifest entry's ``ranges``: ``{leaf: {dim: [min, max]}}``); the protocol has no field for it.
    """
    found = {"name": model, "versions": ["1"], "platform": platform,
             "inputs": _tensors(contract.inputs), "outputs": _tensors(contract.outputs)}  # fmt: skip
    return {**found, "parameters": {"ranges": dict(ranges)}} if ranges else found


def add_routes(
    app: Any,
    api: Any,
    predict: Callable[[Any], Awaitable[Response]],
    ready: Callable[[Request], Awaitable[bool]],
    keyed: Sequence[Any],
) -> frozenset[str]:
    """Add the protocol's routes to the FastAPI ``app`` serving ``api`` (an ``ExportedModelAPI``); returns their paths.

    ``predict`` runs a parsed ``/predict`` body (an infer body arrives as ``{OIP_KEY: body}``),
    ``ready`` says whether every worker is ready, ``keyed`` are the dependencies that check the
    API key. Infer and metadata take them, like ``/predict``; liveness and readiness stay open,
    like ``/health``. :func:`add_litserve_routes` and ``serving/ray.py`` bind them.
    """
    model, platform = api.model_name, f"lightning-deploy_{api.format}"

    def unknown(name: str) -> JSONResponse:
        return JSONResponse(error(f"unknown model '{name}'; this server serves '{model}'."), status_code=404)

    async def server_ready(request: Request) -> Response:
        return Response(status_code=200 if await ready(request) else 503)

    async def live() -> Response:
        return Response(status_code=200)

    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "lightning-deploy", "version": importlib.metadata.version("lightning-deploy"),
                             "extensions": []})  # fmt: skip

    async def model_metadata(name: str) -> JSONResponse:
        return (
            JSONResponse(metadata(api.codec.contract, model, platform, api.ranges)) if name == model else unknown(name)
        )

    async def model_ready(name: str, request: Request) -> Response:
        return await server_ready(request) if name == model else unknown(name)

    async def infer(name: str, request: Request) -> Response:
        if name != model:
            return unknown(name)
        if "inference-header-content-length" in request.headers:
            return JSONResponse(error("binary tensor data is not supported here: send the tensors as JSON data"
                                      " (tritonclient: binary_data=False)."), status_code=400)  # fmt: skip
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(error("the body is not JSON."), status_code=400)
        return await predict({OIP_KEY: body})

    routes = [
        ("/v2", server_metadata, "GET", keyed),
        ("/v2/health/live", live, "GET", []),
        ("/v2/health/ready", server_ready, "GET", []),
        ("/v2/models/{name}", model_metadata, "GET", keyed),
        ("/v2/models/{name}/ready", model_ready, "GET", []),
        ("/v2/models/{name}/infer", infer, "POST", keyed),
    ]
    for path, endpoint, method, dependencies in routes:
        app.add_api_route(path, endpoint, methods=[method], dependencies=list(dependencies), include_in_schema=False)
    return frozenset(path.replace("{name}", model) for path, *_ in routes)


def add_litserve_routes(server: Any, api: Any) -> frozenset[str]:
    """:func:`add_routes` on a ``LitServer`` of ``api``: its ``/predict`` endpoint, its health check, its key."""
    endpoints = {getattr(route, "path", None): getattr(route, "endpoint", None) for route in server.app.routes}
    health = endpoints[server.healthcheck_path]

    async def ready(request: Request) -> bool:
        return (await health(request)).status_code == 200

    return add_routes(server.app, api, endpoints[api.api_path], ready, [Depends(server.setup_auth(api))])


def _tensors(tensors: Tensors) -> list[dict[str, Any]]:
    return [{"name": leaf.name, "datatype": DATATYPES.get(leaf.dtype or "", str(leaf.dtype).upper()),
             "shape": [-1 if d in leaf.dynamic else size for d, size in enumerate(leaf.shape or ())]}
            for leaf in tensors.leaves]  # fmt: skip


def _array(name: str, dtype: str | None, tensor: Mapping[str, Any]) -> np.ndarray:
    """One input tensor as the exported dtype; its datatype must be the model's, its data must fill its shape."""
    wanted = DATATYPES.get(dtype or "", str(dtype).upper())
    if (tensor.get("parameters") or {}).get("binary_data_size") is not None:
        raise StructureError(f"input '{name}': binary data is not supported here; send it as JSON data.")
    if tensor.get("datatype") != wanted:
        raise StructureError(f"input '{name}': datatype {tensor.get('datatype')!r}, the model takes {wanted}.")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):  # fmt: skip
        raise StructureError(f"input '{name}': shape {shape!r} is not a list of sizes.")
    try:
        values = np.asarray(tensor.get("data"), dtype=np.dtype(dtype))
        return values.reshape(shape)
    except (TypeError, ValueError) as err:
        raise StructureError(
            f"input '{name}': its data do not make a {wanted} tensor of shape {shape} ({err})."
        ) from None
