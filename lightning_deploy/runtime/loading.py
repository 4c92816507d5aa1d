"""``load(path)``: run an exported artifact with the model's own structured inputs and outputs.

Needs neither the training code nor Lightning; an ONNX artifact needs only ``onnxruntime``
and ``numpy``. Everything that can be done once (reading the manifest, the sha256 check,
compiling the schema, opening the runtime) is done here, not per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning_deploy.artifact.resolve import (
    ResolvedArtifact,
    check_digests,
    resolve_artifact,
    sha256_in_background,
)
from lightning_deploy.runtime.calling import bind_arguments
from lightning_deploy.runtime.host import fingerprint
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.runtime.placement import normalise_device

# ResolvedArtifact, resolve_artifact and bind_arguments: where release 0.1 had them (lightning_deploy.load).
__all__ = ["ExportedModel", "ResolvedArtifact", "bind_arguments", "load", "resolve_artifact"]


def load(
    path: str | Path,
    format: str | None = None,  # noqa: A002 - the manifest's word
    verified_only: bool = True,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    device: str | None = None,
) -> ExportedModel:
    """Open an artifact (or the best one a manifest lists) as a callable with structured I/O.

    Args:
        path: ``STEM.onnx``, ``STEM.torchscript.pt``, ``STEM.pt2``, ``STEM.aoti.pt2`` or
            ``STEM.export.json``.
        format: with a manifest path, which artifact to run. Default: the fastest verified
            one at the default tolerance, by the timings ``lightning-deploy verify`` took on this
            machine where it ran here, else by those the export recorded on this device
            (``ms_per_call``); without either, the first ``ok`` of onnx, torchscript, pt2, aoti, ...
            (``formats.py``'s preference). int8 and bf16 artifacts run only when named.
        verified_only: refuse an artifact that the manifest records as failed.
        threads: ONNX Runtime's intra-op threads (default: its own, one per physical core).
            torch runtimes follow ``torch.set_num_threads``, which is the process's to set.
        providers: ONNX Runtime execution providers, for what ``device`` does not cover
            (TensorRT, OpenVINO); not together with ``device``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: the artifact runs there, inputs are
            moved there and torch outputs come back there. Default: the device the manifest
            records for the artifact when this machine has it, else the CPU. Never another
            device than asked: a missing GPU (or ONNX Runtime without CUDA) raises.

    Returns:
        An :class:`ExportedModel`, called like the original ``forward``.

    Raises:
        LoadError: for a missing manifest or artifact, one recorded as failed, or a device
            this machine or runtime lacks (the error names the fix).
        IntegrityError: when the sha256 of the artifact (or of a side file such as
            ``STEM.onnx.data``) differs from the manifest's.

    Examples:
        >>> model = load("checkpoints/best.onnx")  # doctest: +SKIP
        >>> out = model({"x": x, "mask": mask})  # doctest: +SKIP

    """
    where = None if device is None else normalise_device(device)
    resolved = resolve_artifact(path, format, verified_only, where, host=fingerprint)
    digests = sha256_in_background(list(resolved.recorded))
    try:
        model = ExportedModel(resolved.contract, resolved.entry, resolved.artifact, threads, providers, device)
    except Exception:
        check_digests(digests(), resolved.recorded)  # a changed file explains a failure to open it: say so instead
        raise
    check_digests(digests(), resolved.recorded)
    return model
