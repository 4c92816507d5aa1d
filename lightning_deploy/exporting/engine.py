"""The export engine: adapters -> exporters -> verification -> manifest.

``export()`` is the one entry point; the callback and the command line are thin layers over
it. Every argument is checked before any file is written; every file is staged and renamed
into place; a failing format never stops the others; the manifest is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_deploy.artifact.files import install_lock, move_into_place, staging_dir, write_json_atomic
from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX, header, versions
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.attempts import error_text, export_format, unbacked_sizes
from lightning_deploy.exporting.families import supported
from lightning_deploy.exporting.options import ExportOptions
from lightning_deploy.exporting.plan import make_plan
from lightning_deploy.exporting.verifying.checks import labelled_samples
from lightning_deploy.exporting.verifying.eager import attention_fast_path
from lightning_deploy.exporting.verifying.golden import write_golden_samples
from lightning_deploy.exporting.verifying.latency import time_artifacts
from lightning_deploy.exporting.work import Work
from lightning_deploy.verification.golden import DEFAULT_MAX_MB

__all__ = ["export", "export_with"]


def export(
    module: nn.Module,
    input_sample: Any,
    dirpath: str | os.PathLike[str],
    stem: str,
    formats: Sequence[str] | str = ("torchscript", "onnx"),
    method: str = "auto",
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    opset: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    int8_rtol: float = 0.05,
    accuracy_data: Iterable[Any] | None = None,
    check_samples: Sequence[Any] | Mapping[str, Any] | None = None,
    executorch_bounds: Mapping[str, int] | None = None,
    bf16_rtol: float = 0.02,
    golden_samples: bool = True,
    golden_samples_max_mb: float = DEFAULT_MAX_MB,
) -> dict[str, Any]:
    """Export ``module`` to verified artifacts ``dirpath/stem.*`` and a manifest.

    Args:
        module: any ``nn.Module``; exported in eval mode (its modes are restored after) on the
            device it lives on: the sample is moved there, and every artifact is verified there
            (ONNX on a GPU only where ONNX Runtime has its CUDA provider, else on the CPU).
        input_sample: nested tensors by ``example_input_array``'s convention: a tuple holds
            positional arguments, a dict keyword arguments, anything else is the one argument.
        dirpath: the folder of the artifacts (created if missing).
        stem: the artifacts' common file name stem (``STEM.onnx``, ``STEM.export.json``).
        formats: any of ``"torchscript"``, ``"onnx"``, ``"pt2"``, ``"aoti"`` (an AOTInductor
            package compiled for the module's device), the faster ONNX files
            ``"onnx-optimized"`` (fused for ONNX Runtime) and ``"onnx-int8"`` (int8 weights),
            ``"executorch"`` (``STEM.pte``, lowered with XNNPACK; needs
            ``lightning-deploy[executorch]``) and ``"openvino"`` (``STEM.openvino.xml`` and
            ``.bin``, verified and run at float32; needs ``lightning-deploy[openvino]``), and
            ``"openvino-bf16"`` (that IR run in bfloat16, on CPUs with ``avx512_bf16`` or AMX).
        method: ``"trace"``, ``"script"``, ``"export"`` or ``"auto"`` (ONNX: export, then
            trace, then script; TorchScript: trace, then script where tracing warned or did
            not verify; pt2: export).
        dynamic_batch: make dimension 0 of every input leaf dynamic.
        dynamic_axes: more dynamic dims, ``{leaf or prefix: {dim: name}}``.
        verify: reload every artifact in its runtime and compare with eager at two shapes.
        atol: absolute tolerance; ``rtol``: tolerance relative to each leaf's largest value.
        rtol: see ``atol``.
        opset: ONNX opset; ``None`` for the exporter's default.
        checkpoint: the checkpoint the weights came from, recorded in the manifest.
        int8_rtol: ``rtol`` of the ``onnx-int8`` artifact's verification.
        accuracy_data: labelled batches ``(input_sample, class indices)``, e.g. a validation
            ``DataLoader`` (read twice, so not a one-shot generator): ``onnx-int8`` becomes
            static int8 calibrated on its first batches, and its top-1 accuracy is measured
            on them beside the eager model's, the delta recorded under ``accuracy``.
        check_samples: more samples, in ``input_sample``'s convention, that every artifact is
            verified at (real data: what the deployed model will see); a mapping names them
            (``{"validation batch 0": sample}``). Each check is recorded in the artifact's
            ``checks``; besides them every artifact is checked at the export sample, at a
            second sample with every dynamic dim changed, and at a synthetic sample with
            smaller dynamic dims and new values.
        executorch_bounds: the largest size of each dynamic axis in the ``executorch``
            artifact (``{"batch": 64, "seq": 512}``): ExecuTorch plans memory for it at load,
            and ``load()`` refuses a bigger input. Default 64 for the batch, twice the export
            sample's size for other axes, never less than a check needs; recorded in the
            entry's ``bounds``.
        bf16_rtol: ``rtol`` of the ``openvino-bf16`` artifact's verification.
        golden_samples: write every check's inputs and eager outputs to ``STEM.samples.npz``
            (numpy arrays by leaf name, listed in the manifest's ``samples`` with their sha256),
            so that ``lightning-deploy verify`` re-checks the artifacts where they run.
        golden_samples_max_mb: the samples' size cap: the largest checks are dropped first,
            and the manifest records which.

    Returns:
        The manifest, also written to ``dirpath/stem.export.json``.

    Raises:
        ConfigurationError: for a bad argument, before any file is written.

    Examples:
        >>> manifest = export(model, torch.randn(4, 8), "out", "model", formats=["onnx"])  # doctest: +SKIP
        >>> manifest["artifacts"][0]["ok"]  # doctest: +SKIP
        True

    """
    options = ExportOptions.from_arguments(locals(), owner="export")
    return export_with(module, input_sample, dirpath, stem, options, checkpoint, accuracy_data, check_samples)


def export_with(
    module: nn.Module,
    input_sample: Any,
    dirpath: str | os.PathLike[str],
    stem: str,
    options: ExportOptions,
    checkpoint: str | os.PathLike[str] | None = None,
    accuracy_data: Iterable[Any] | None = None,
    check_samples: Sequence[Any] | Mapping[str, Any] | None = None,
    timed: bool = True,
) -> dict[str, Any]:
    """:func:`export` with its settings checked already: the callback and the command line pass theirs whole.

    ``timed=False`` leaves out the artifacts' timing against each other (the callback's
    preflight, whose artifacts are thrown away: for a big model, opening each again costs
    as long as verifying it). Returns the manifest, also written to ``dirpath/stem.export.json``.
    """
    dirpath = _checked_target(module, dirpath, stem)
    # Captures and the eager reference take the plain attention path (eager.py); eval mode, no autograd.
    with contextlib.ExitStack() as stack:
        for context in (_eval_mode(module), torch.no_grad(), attention_fast_path(False), _lightning_scripting(module)):
            stack.enter_context(context)
        module = stack.enter_context(supported(module))
        plan = make_plan(module, input_sample, options, labelled_samples(check_samples))
        dirpath.mkdir(parents=True, exist_ok=True)
        with staging_dir(dirpath, stem) as staging:
            work = Work(plan, options, staging, stem, accuracy_data)
            results = [export_format(fmt, work) for fmt in options.formats]
            # A JSON round trip, so that the returned dict is exactly what the file holds (str keys).
            artifacts = [entry for entry, _ in results]
            unbacked_sizes(work, artifacts)
            if timed:
                time_artifacts(work, artifacts, [folder for _, folder in results])
            folders = [folder for _, folder in results if folder is not None]
            samples = _golden_samples(work, staging, folders) if options.golden_samples else None
            manifest = _manifest(work, artifacts, dirpath, checkpoint, samples)
            manifest["substitution"] = getattr(module, "substitution", None)  # not forward itself: what, and why
            manifest = json.loads(json.dumps(manifest, allow_nan=False))
            with install_lock(dirpath):  # the whole set moves in together, the manifest last
                for folder in folders:
                    move_into_place(folder, dirpath)
                write_json_atomic(dirpath / (stem + MANIFEST_SUFFIX), manifest)
    return manifest


def _golden_samples(work: Work, staging: Path, folders: list[Path]) -> dict[str, Any]:
    """Write the golden samples into staging (their folder joins ``folders``); the manifest's ``samples``.

    A full disk costs the samples, never the artifacts or the manifest: the error is recorded instead.
    """
    folder = staging / "golden-samples"
    folder.mkdir()
    try:
        with work.steps.step("golden samples written"):
            samples = write_golden_samples(work.plan, folder, work.stem, work.options.golden_samples_max_mb)
    except OSError as err:
        return {"path": None, "sha256": None, "max_mb": work.options.golden_samples_max_mb, "checks": [],
                "dropped": [], "error": error_text(err)}  # fmt: skip
    folders.append(folder)
    return samples


def _checked_target(module: Any, dirpath: Any, stem: Any) -> Path:
    if not isinstance(module, nn.Module):
        raise ConfigurationError(f"export(module=...): expected a torch.nn.Module, got {type(module).__name__}.")
    if not isinstance(stem, str) or not stem or os.sep in stem or "/" in stem or stem.startswith("."):
        raise ConfigurationError(
            f"export(stem={stem!r}): the stem must be a plain file name without folders or a leading dot."
            " HINT: pass the folder as dirpath and e.g. stem='model'."
        )
    path = Path(dirpath)
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"export(dirpath={str(path)!r}): this is a file, not a folder. HINT: pass a folder.")
    return path


@contextlib.contextmanager
def _lightning_scripting(module: nn.Module) -> Iterator[None]:
    """For a LightningModule, Lightning's own ``_jit_is_scripting`` (what ``to_torchscript`` uses).

    A LightningModule's ``trainer`` property raises when no Trainer is attached, and tracing or
    scripting reads every attribute; inside this context it returns ``None``. Looked up in
    ``sys.modules`` so that the engine never imports Lightning itself: a LightningModule means
    Lightning is already imported.
    """
    core = sys.modules.get("lightning.pytorch.core.module")
    if core is None or not isinstance(module, core.LightningModule):
        yield
        return
    with core._jit_is_scripting():
        yield


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the export; every submodule's own mode is restored afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _manifest(
    work: Work,
    artifacts: list[dict[str, Any]],
    dirpath: Path,
    checkpoint: str | os.PathLike[str] | None,
    samples: dict[str, Any] | None,
) -> dict[str, Any]:
    options = work.options
    return {
        **header(dirpath, checkpoint),
        "ok": all(a["ok"] for a in artifacts),
        **work.contract.to_json(),
        "attention_fast_path": work.plan.fast_path,
        "skipped_checks": work.plan.skipped,
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "owner"},
        "artifacts": artifacts,
        "samples": samples,
        "versions": versions(),
    }
