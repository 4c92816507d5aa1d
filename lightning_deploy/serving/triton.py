"""A Triton Inference Server model repository entry for a verified ONNX, TorchScript or OpenVINO artifact.

``REPOSITORY/NAME/config.pbtxt`` and ``REPOSITORY/NAME/1/model.onnx`` (``model.pt``; OpenVINO's
``model.xml`` with its weights as ``model.bin``, the name its backend reads them by), the golden
samples (``samples.npz``, and their inputs as ``perf_analyzer_data.json``), with
inputs and outputs named, typed and shaped from the manifest: ``-1`` where a dim is dynamic,
and Triton's implicit batch (``max_batch_size``) only where dim 0 of every input and output
is the dynamic batch. The config is written as protobuf text by hand, not through
``tritonclient``'s ``model_config_pb2``: that module comes only with ``tritonclient[grpc]``
(grpcio), a heavy dependency for thirty lines of text; the tests parse what is written with it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.files import sha256_file
from lightning_deploy.artifact.manifest import manifest_path
from lightning_deploy.artifact.resolve import resolve_artifact
from lightning_deploy.errors import ConfigurationError, IntegrityError
from lightning_deploy.formats import TritonModel, by_name, triton_order
from lightning_deploy.serving.codec import batch_axis
from lightning_deploy.serving.oip import DATATYPES
from lightning_deploy.verification.golden import read_samples

__all__ = ["DEFAULT_MAX_BATCH_SIZE", "write_model_repository"]

DEFAULT_MAX_BATCH_SIZE = 8
# Triton's backend and file name for each format it can run: the ONNX files first (as load() prefers
# the plain one), then the others, each group in load()'s order of preference.
_PLATFORMS = {name: by_name(name).triton for name in triton_order()}
_DATA_TYPES = {dtype: f"TYPE_{datatype}" for dtype, datatype in DATATYPES.items()}  # the protocol's, as config types
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_model_repository(
    path: str | Path,
    repository: str | Path,
    name: str | None = None,
    max_batch_size: int | None = None,
    format: str | None = None,  # noqa: A002 - load()'s word
    overwrite: bool = False,
) -> Path:
    """Write ``repository/name`` for the artifact at ``path`` (or the manifest's ONNX, else TorchScript one).

    Args:
        path: an ONNX, TorchScript or OpenVINO artifact, or its manifest.
        repository: the model repository folder (made if missing).
        name: the model's name in Triton (default: the artifact's stem).
        max_batch_size: Triton's implicit batch; default :data:`DEFAULT_MAX_BATCH_SIZE` where dim 0
            of every input and output is the dynamic batch, else 0 (full shapes, no batching).
        format: with a manifest, which artifact.
        overwrite: replace an existing ``repository/name``.

    Returns:
        The model's folder.

    Raises:
        ConfigurationError: for a format Triton cannot run here, a bad name, an existing
            entry without ``overwrite``, or ``max_batch_size`` > 0 on a model without a batch.
        LoadError: for an artifact ``load`` would refuse (failed at export, missing).
        IntegrityError: when the copied files' sha256 differ from the manifest's.
    """
    if format is None and Path(path).name.endswith(".export.json"):
        format = _first_servable(path)  # noqa: A001
    resolved = resolve_artifact(path, format)
    fmt = resolved.entry.format
    native = resolved.entry.io == "native"
    if fmt not in _PLATFORMS or native:
        raise ConfigurationError(
            f"{resolved.artifact.name} is a {fmt} artifact{' with native I/O' if native else ''};"
            " Triton runs ONNX, OpenVINO and flat TorchScript artifacts here."
            " HINT: export formats=['onnx'] and pass that."
        )
    manifest, contract = resolved.manifest, resolved.contract
    name = name or resolved.artifact.name.split(".", 1)[0]
    if not _MODEL_NAME.match(name):
        raise ConfigurationError(f"--name {name!r}: use letters, digits, '_', '.' and '-'.")
    max_batch_size = _max_batch_size(contract, max_batch_size)
    triton = _PLATFORMS[fmt]
    model_file = triton.model_file
    input_names, output_names = _tensor_names(resolved.artifact, fmt, contract)
    config = _config_text(name, triton, max_batch_size, contract, input_names, output_names, resolved.entry.ranges)

    repository = Path(repository)
    target = repository / name
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} exists. HINT: pass --overwrite to replace it, or another --name.")
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=repository))
    try:
        version = staging / "1"
        version.mkdir()
        copies = {resolved.artifact: version / model_file}
        sides = [side for side in resolved.recorded if side != resolved.artifact]
        copies.update({side: version / _side_name(side, model_file) for side in sides})
        for source, copy in copies.items():
            shutil.copyfile(source, copy)
            if sha256_file(copy) != resolved.recorded[source]:
                raise IntegrityError(
                    f"{source}: its sha256 differs from the manifest's; it was changed after export. HINT: re-export."
                )
        (staging / "config.pbtxt").write_text(config)
        _golden_files(path, manifest, contract, staging, input_names, max_batch_size)
        replaced = staging.with_name(staging.name.replace(".creating-", ".replaced-"))
        if target.exists():
            target.rename(replaced)  # kept until the new entry is in place
        staging.rename(target)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# perf_analyzer's --input-data is JSON with every element written out: a few checks are enough to vary its requests.
_PERF_ANALYZER_CHECKS = 4


def _golden_files(
    path: str | Path,
    manifest: Mapping[str, Any],
    contract: IOContract,
    folder: Path,
    input_names: Sequence[str],
    max_batch_size: int,
) -> None:
    """The golden samples beside the entry (``samples.npz``), and the same inputs as ``perf_analyzer`` data.

    ``perf_analyzer_data.json`` is ``perf_analyzer --input-data``'s format, by Triton's input
    names: the inputs of the first checks, each check's first row where Triton batches
    (``max_batch_size`` > 0: perf_analyzer makes the batch), else whole.
    """
    samples = (manifest.get("samples") or {}).get("path")
    if not samples:
        return
    manifest_file = manifest_path(path)
    checks = read_samples(manifest_file, manifest)  # the file's sha256 checked against the manifest's
    shutil.copyfile(manifest_file.parent / samples, folder / "samples.npz")
    leaves = contract.inputs.names
    data = []
    for check in checks[:_PERF_ANALYZER_CHECKS]:
        arrays = [check.inputs[leaf][0] if max_batch_size > 0 else check.inputs[leaf] for leaf in leaves]
        data.append({name: {"content": array.ravel().tolist(), "shape": list(array.shape)}
                     for name, array in zip(input_names, arrays)})  # fmt: skip
    (folder / "perf_analyzer_data.json").write_text(json.dumps({"data": data}))


def _side_name(side: Path, model_file: str) -> str:
    """A side file's name in the repository: OpenVINO's weights beside ``model.xml`` as ``model.bin``.

    ONNX's external data keeps its name, which the model file refers to; OpenVINO reads the
    weights of ``X.xml`` from ``X.bin``.
    """
    if model_file.endswith(".xml") and side.suffix == ".bin":
        return Path(model_file).with_suffix(".bin").name
    return side.name


def _first_servable(manifest: str | Path) -> str | None:
    """The manifest's first ``ok`` artifact Triton can run (ONNX before TorchScript); ``None`` lets load() say why."""
    from lightning_deploy.artifact.manifest import read_manifest

    entries = read_manifest(Path(manifest)).get("artifacts") or []
    ok = {e.get("format") for e in entries if isinstance(e, Mapping) and e.get("ok") and e.get("io") != "native"}
    return next((fmt for fmt in _PLATFORMS if fmt in ok), None)


def _max_batch_size(contract: IOContract, requested: int | None) -> int:
    axis, reason = batch_axis(contract)
    if requested is None:
        return DEFAULT_MAX_BATCH_SIZE if axis is not None else 0
    if requested < 0:
        raise ConfigurationError(f"--max-batch-size {requested}: give 0 (no batching) or more.")
    if requested > 0 and axis is None:
        raise ConfigurationError(
            f"--max-batch-size {requested} makes dim 0 Triton's batch, but {reason}."
            " HINT: pass --max-batch-size 0, or export with dynamic_batch=True."
        )
    return requested


def _tensor_names(artifact: Path, fmt: str, contract: IOContract) -> tuple[list[str], list[str]]:
    """The artifact's own input and output names, as Triton's backend matches them.

    ONNX and OpenVINO: the graph's names, which are the manifest's leaf names. TorchScript has no output
    names, so Triton's libtorch backend takes ``OUTPUT__n``; inputs go by ``forward``'s argument
    names where those are the leaf names, else by ``INPUT__n`` (a traced module's arguments
    are called ``input``, ``argument_2``, ...).
    """
    inputs, outputs = contract.inputs.names, contract.outputs.names
    if _PLATFORMS[fmt].name != "pytorch_libtorch":  # ONNX and OpenVINO: the graph's own names
        return inputs, outputs
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.jit's deprecation notice, said once per process: not news here
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(artifact), map_location="cpu")
    arguments = [a.name for a in module.forward.schema.arguments[1:]]
    if arguments != inputs:
        inputs = [f"INPUT__{i}" for i in range(len(inputs))]
    return inputs, [f"OUTPUT__{i}" for i in range(len(outputs))]


def _config_text(
    name: str,
    triton: TritonModel,
    max_batch_size: int,
    contract: IOContract,
    input_names: Sequence[str],
    output_names: Sequence[str],
    ranges: Mapping[str, Any] | None,
) -> str:
    lines = [
        "# Written by lightning-deploy from the artifact's manifest.",
        f"name: {json.dumps(name)}",
        f"{triton.key}: {json.dumps(triton.name)}",
        f"max_batch_size: {max_batch_size}",
    ]
    sides = (("input", contract.inputs, input_names), ("output", contract.outputs, output_names))
    for section, tensors, names in sides:
        lines.append(f"{section} [")
        entries = []
        for leaf, triton_name in zip(tensors.leaves, names):
            dims = [-1 if d in leaf.dynamic else int(size) for d, size in enumerate(leaf.shape)]
            entries.append(_tensor_text(leaf.name, triton_name, leaf.dtype, dims[1:] if max_batch_size > 0 else dims))
        lines.append(",\n".join(entries))
        lines.append("]")
    if max_batch_size > 0:
        lines.append("dynamic_batching { }")
    if ranges:  # Triton's config has no field for it: a parameter that clients read with the model's config
        leaves = zip(contract.inputs.leaves, input_names)
        by_triton_name = {triton_name: ranges[leaf.name] for leaf, triton_name in leaves if leaf.name in ranges}
        lines += ["# the sizes each dynamic dim accepts, {input: {dim of the full shape: [min, max]}} (max null: none)",
                  "parameters {", '  key: "lightning_deploy.ranges"',
                  f"  value: {{ string_value: {json.dumps(json.dumps(by_triton_name))} }}", "}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _tensor_text(leaf: str, triton_name: str, dtype: str, dims: list[int]) -> str:
    if dtype not in _DATA_TYPES:
        raise ConfigurationError(f"'{leaf}' is {dtype}, which Triton's config has no type for.")
    body = [f"    name: {json.dumps(triton_name)}", f"    data_type: {_DATA_TYPES[dtype]}"]
    if triton_name != leaf:
        body.insert(0, f"    # {leaf}")
    if dims:
        body.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:  # Triton refuses empty dims: a [batch]-only tensor is [1] reshaped to a scalar per row
        body.append("    dims: [ 1 ]")
        body.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(body) + "\n  }"
