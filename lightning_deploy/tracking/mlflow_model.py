"""Register an export as an MLflow model: the ``pyfunc`` flavour, a tensor signature, an input example.

The model holds one artifact (the one ``load(manifest)`` runs by default on the CPU), the
manifest and this package's code (``code_paths``), so it loads where only the artifact's runtime
is installed: ``pip_requirements`` are that runtime and the operator libraries the manifest says
the artifact calls, at the versions that verified it. The signature and input example come from
the manifest's input and output leaves (dynamic dims as -1; the example at the export shapes).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from lightning_deploy.artifact.contract import IOContract, Tensors
from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX
from lightning_deploy.artifact.resolve import default_artifact
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.tracking.pyfunc_model import EXPORT_ARTIFACT

PYFUNC_CODE = Path(__file__).with_name("pyfunc_code.py")
PACKAGE = Path(__file__).parents[1]  # lightning_deploy/, shipped with the model

__all__ = ["input_example", "log_registered_model", "pip_requirements", "signature"]


def signature(contract: IOContract) -> ModelSignature:
    """Tensor specs of the input and output leaves, by name; dynamic dims are -1."""
    return ModelSignature(inputs=_schema(contract.inputs), outputs=_schema(contract.outputs))


def _schema(tensors: Tensors) -> Schema:
    return Schema([
        TensorSpec(np.dtype(leaf.dtype), tuple(-1 if d in leaf.dynamic else n for d, n in enumerate(leaf.shape)),
                   leaf.name)
        for leaf in tensors.leaves
    ])  # fmt: skip


def input_example(contract: IOContract) -> dict[str, np.ndarray]:
    """Zeros at the export shapes, one array per input leaf (what a request to the served model looks like)."""
    return {leaf.name: np.zeros(leaf.shape, np.dtype(leaf.dtype)) for leaf in contract.inputs.leaves}


def pip_requirements(manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> list[str]:
    """numpy, the artifact's runtime package and its operator libraries, pinned to the versions that verified it."""
    packages = ["numpy", runtime_module(entry["format"]).PACKAGE]
    packages += [p for p in entry.get("requires", []) if not p.startswith("onnx-domain:")]
    return [_pinned(p, manifest.get("versions") or {}) for p in dict.fromkeys(packages)]


def _pinned(package: str, recorded: Mapping[str, str | None]) -> str:
    version = recorded.get(package)
    if version is None:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            return package
    return f"{package}=={version.split('+')[0]}"  # a local build (2.14.1+cu130) is not on an index


def log_registered_model(
    client: mlflow.MlflowClient, run_id: str, dirpath: Path, manifest: Mapping[str, Any], stem: str, name: str
) -> dict[str, Any]:
    """Log the pyfunc model of ``manifest``'s default CPU artifact to ``run_id`` and register it as ``name``.

    The model is logged as ``STEM`` (MLflow 3 keeps a logged model's files beside the run's).
    Returns what the manifest records: the name, version, format and model URI.

    Raises:
        ValueError: when no artifact is ok at the default tolerance (nothing to register).
    """
    runs_on_cpu = [e for e in manifest["artifacts"] if not by_name(e["format"]).compiled or e.get("device") == "cpu"]
    entry = default_artifact(runs_on_cpu, "cpu")
    if entry is None or not entry["ok"]:
        raise ValueError(
            f"{stem}: no artifact that runs on the CPU verified at the default tolerance, so there is nothing to"
            " register. HINT: see the manifest's errors (lightning-deploy show), and add 'onnx' to formats."
        )
    manifest_name = stem + MANIFEST_SUFFIX
    contract = IOContract.from_manifest(manifest, dirpath / manifest_name)
    with tempfile.TemporaryDirectory(prefix="lightning-deploy-mlflow-") as scratch:
        folder = Path(scratch) / stem
        folder.mkdir()
        samples = (manifest.get("samples") or {}).get("path")  # the golden check load_context runs
        for file in [manifest_name, *entry["files"], *([samples] if samples else [])]:
            shutil.copy2(dirpath / file, folder / file)
        with _tracking_uri(client.tracking_uri):
            info = Model.log(
                artifact_path=None, name=stem, flavor=mlflow.pyfunc, run_id=run_id, registered_model_name=name,
                python_model=str(PYFUNC_CODE), artifacts={EXPORT_ARTIFACT: str(folder)},
                model_config={"manifest": manifest_name, "format": entry["format"], "device": "cpu"},
                code_paths=[str(PACKAGE)],
                pip_requirements=pip_requirements(manifest, entry),
                signature=signature(contract), input_example=input_example(contract),
            )  # fmt: skip
    version = str(info.registered_model_version)
    return {"name": name, "version": version, "format": entry["format"], "model_uri": f"models:/{name}/{version}"}


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """``Model.log`` logs through the process's tracking URI; the client's, for the time of one call.

    (``mlflow.tracking._tracking_service.utils._use_tracking_uri`` does this, but is private.)
    """
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
