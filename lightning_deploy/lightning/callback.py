"""``ModelExport``: export and verify the best checkpoint when ``fit`` ends.

A thin Lightning-facing layer over ``export()``: it validates its arguments at construction,
checks the set-up and dry-runs the export before training (``setup``), and at ``on_fit_end``
rebuilds the model from the chosen checkpoint and exports it next to that checkpoint. Only
global rank zero exports; every rank meets at a barrier afterwards.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_deploy.artifact.manifest import failure_manifest
from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.exporting.engine import export_with
from lightning_deploy.exporting.options import ExportOptions
from lightning_deploy.formats import FormatName, by_name
from lightning_deploy.lightning.arguments import (
    CHECKPOINTS,
    check_choices,
    checkpoint_callback,
    chosen_checkpoint,
    count,
    sample_of,
    target_of,
)
from lightning_deploy.lightning.checkpoints import model_with_weights
from lightning_deploy.lightning.data import samples_to_check, validation_loader
from lightning_deploy.lightning.input_spec import sample_from_spec
from lightning_deploy.lightning.loggers import check_trackers, log_headlines, log_to_trackers
from lightning_deploy.lightning.validation import check_metric_tolerance, validate_artifacts
from lightning_deploy.report import print_report
from lightning_deploy.tracking.extras import check_register_model

__all__ = ["ModelExport"]


class ModelExport(Callback):
    """Export the best checkpoint at the end of ``fit``, verified in every runtime.

    Args:
        formats: any of ``"torchscript"``, ``"onnx"``, ``"pt2"``, ``"aoti"`` (AOTInductor, compiled
            for the training device; the preflight checks its ``torch.export`` capture only,
            since compiling takes tens of seconds), ``"onnx-optimized"`` (fused for
            ONNX Runtime), ``"onnx-int8"`` (int8 weights; its top-1 accuracy on the validation
            loader is recorded beside the checkpoint's where batches are ``(inputs, class indices)``),
            ``"executorch"`` (``STEM.pte`` for ExecuTorch, dynamic dims bounded) and ``"openvino"``
            (OpenVINO's IR, run at float32); those two need ``lightning-deploy[executorch]`` and
            ``lightning-deploy[openvino]``.
        method: ``"auto"``, ``"trace"``, ``"script"`` or ``"export"``.
        input_sample: nested tensors (Python only); default ``pl_module.example_input_array``.
        input_spec: the YAML form of a sample, e.g. ``{"shape": [2, 3, 64, 64], "dtype": "float32"}``
            or ``{"x": {...}, "mask": {...}}`` for keyword arguments.
        submodule: dotted path of the ``nn.Module`` to export (``"model.net"``); default the
            LightningModule itself.
        dynamic_batch: make dim 0 of every input leaf dynamic.
        dynamic_axes: more dynamic dims, ``{"x": {2: "height", 3: "width"}}``.
        checkpoint: ``"best"`` (the checkpoint callback's best, or its last saved when nothing
            is monitored), ``"last"``, or ``"final"`` (the in-memory weights at fit end).
        dirpath: where to write; default the chosen checkpoint's folder.
        verify: smoke-test every artifact in its own runtime at two shapes.
        atol: absolute tolerance of the comparison.
        rtol: tolerance relative to each output leaf's largest magnitude.
        preflight: dry-run the export of the untrained model in ``setup``.
        strict: raise at fit end (and at preflight) if any artifact failed.
        opset: ONNX opset; ``None`` for the exporter's default.
        int8_rtol: ``rtol`` of the ``onnx-int8`` artifact's verification.
        bf16_rtol: ``rtol`` of the ``openvino-bf16`` artifact's verification.
        check_batches: also verify every artifact on the first ``check_batches`` batches of the
            validation loader (0: none), each recorded in the artifact's ``checks``. Forward's
            inputs are taken from a batch by the LightningModule's ``export_sample(batch)`` where
            it defines one, else by the ``(input_sample, target)`` convention; batches of another
            form are skipped with a warning.
        executorch_bounds: the largest size of each dynamic axis in the ``executorch`` artifact,
            ``{"batch": 64}``; default 64 for the batch, twice the sample's size for other axes.
        log_artifacts: log the verified artifacts and the manifest to the run of an ``MLFlowLogger``
            (under ``lightning-deploy/STEM/``) or ``WandbLogger`` (a ``model`` artifact named after the
            stem). A failure to log is a warning and a manifest record, never a failed ``fit``.
        register_model: register the export in MLflow's model registry under this name: a
            ``pyfunc`` model that runs the fastest verified CPU artifact through ``load()``
            (``mlflow.pyfunc.load_model("models:/NAME/N")``, ``mlflow models serve``). Needs an
            ``MLFlowLogger`` on the trainer and ``lightning-deploy[mlflow]``.
        validate: where the fit has a validation loop, run the module's ``validation_step`` with eager
            and with each ok artifact as ``forward``, recording every metric it logs per artifact in
            the manifest's ``metrics`` (nothing reaches the run or the callbacks a second time).
        validate_batches: how many validation batches those runs take.
        metric_tolerance: how far an artifact's metric may move from eager's before the artifact
            is not ok: one number, or ``{"val_acc": 0.01, ...}`` per metric (others the default);
            ``None``: 1e-3, and 0.02 for int8 and bf16 artifacts.
        golden_samples: write every check's inputs and eager outputs beside the artifacts
            (``STEM.samples.npz``) for ``lightning-deploy verify`` on the deployment machine.
        golden_samples_max_mb: their size cap; the largest checks are dropped first.

    Raises:
        ConfigurationError: at construction or ``setup``, naming the argument and the fix.

    Examples:
        >>> trainer = pl.Trainer(callbacks=[ModelCheckpoint(monitor="val_loss"), ModelExport()])  # doctest: +SKIP
    """

    CHECKPOINTS = CHECKPOINTS
    FINAL_STEM = "final"

    def __init__(
        self,
        formats: Sequence[FormatName] = ("torchscript", "onnx"),
        method: Literal["auto", "trace", "script", "export"] = "auto",
        input_sample: Any = None,
        input_spec: dict[str, Any] | None = None,
        submodule: str | None = None,
        dynamic_batch: bool = True,
        dynamic_axes: dict[str, dict[int, str]] | None = None,
        checkpoint: Literal["best", "last", "final"] = "best",
        dirpath: str | None = None,
        verify: bool = True,
        atol: float = 1e-4,
        rtol: float = 1e-3,
        preflight: bool = True,
        strict: bool = False,
        opset: int | None = None,
        int8_rtol: float = 0.05,
        check_batches: int = 2,
        executorch_bounds: dict[str, int] | None = None,
        bf16_rtol: float = 0.02,
        log_artifacts: bool = True,
        register_model: str | None = None,
        validate: bool = True,
        validate_batches: int = 10,
        metric_tolerance: float | dict[str, float] | None = None,
        golden_samples: bool = True,
        golden_samples_max_mb: float = 32.0,
    ) -> None:
        self.options = ExportOptions.from_arguments(locals(), owner="ModelExport")
        check_choices(input_sample, input_spec, submodule, checkpoint, dirpath, {"preflight": preflight,
                      "strict": strict, "log_artifacts": log_artifacts, "validate": validate})  # fmt: skip
        check_register_model(register_model, "ModelExport")
        self.check_batches = count("check_batches", check_batches, 0, "0 to verify on the synthetic samples alone")
        self.validate_batches = count("validate_batches", validate_batches, 1, "validate=False to skip the metrics")
        self.metric_tolerance = check_metric_tolerance(metric_tolerance, "ModelExport")
        self.validate = validate
        self.input_sample = input_sample
        self.input_spec = input_spec
        self._spec_sample = sample_from_spec(input_spec) if input_spec is not None else None
        self.submodule = submodule
        self.checkpoint = checkpoint
        self.dirpath = dirpath
        self.preflight = preflight
        self.strict = strict
        self.log_artifacts = log_artifacts
        self.register_model = register_model
        self.manifest: dict[str, Any] | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the checkpoint callback, the sample and the submodule; dry-run the export."""
        if stage != "fit":
            return
        if self.checkpoint != "final":
            checkpoint_callback(trainer, self.checkpoint)
        check_trackers(trainer, self.register_model)
        target = self._target(pl_module)
        sample = self._sample(pl_module)
        if self.preflight:
            self._preflight(trainer, target, sample)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Export the chosen checkpoint on global rank zero; all ranks meet at a barrier."""
        if trainer.interrupted:
            return
        failure: str | None = None
        if trainer.is_global_zero:
            failure = self._export_on_rank_zero(trainer, pl_module)
        failure = trainer.strategy.broadcast(failure, src=0)
        # The barrier comes last: gloo can keep the last collective's work alive until the process
        # exits, and if that is the broadcast (tensors made in Python) the interpreter's
        # finalisation may abort (pytorch/pytorch#179291); a barrier holds no such tensors.
        trainer.strategy.barrier("ModelExport.on_fit_end")
        if failure and self.strict:
            raise ExportError(f"ModelExport(strict=True): {failure}")
        if failure:
            rank_zero_warn(f"ModelExport: {failure}")

    def _export_on_rank_zero(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str | None:
        """Export; returns a one-line failure description, or ``None`` when every artifact is ok."""
        path = None if self.checkpoint == "final" else chosen_checkpoint(trainer, self.checkpoint)
        if self.checkpoint != "final" and not path:
            return f"no checkpoint was saved, so nothing was exported (checkpoint={self.checkpoint!r})."
        manifest = self.export_checkpoint(pl_module, path, trainer)
        log_headlines(trainer, manifest)
        if self.log_artifacts or self.register_model:
            dirpath, stem = self.destination(path)
            records = log_to_trackers(trainer, dirpath, stem, manifest, self.log_artifacts, self.register_model)
            if records:
                manifest["tracking"] = records
        failed = [a for a in manifest["artifacts"] if not a["ok"]]
        return "; ".join(f"{a['format']} failed: {a['error']}" for a in failed) or None

    def export_checkpoint(
        self,
        model: pl.LightningModule,
        ckpt_path: str | None,
        trainer: pl.Trainer | None = None,
        holds_weights: bool = False,
        datamodule: pl.LightningDataModule | None = None,
    ) -> dict[str, Any]:
        """Export ``ckpt_path``'s weights, loaded into a copy of ``model``, next to the checkpoint.

        The copy lives on the device the trainer trained on (Lightning has moved ``model``
        itself back to the CPU by ``on_fit_end``), so a GPU-trained model is exported and
        verified on its GPU; without a trainer, where ``model`` lives.

        ``ckpt_path`` is a ``.ckpt`` file or a sharded checkpoint directory. With
        ``holds_weights=True`` ``model`` already holds its weights (the command line rebuilt it
        from the checkpoint) and is exported as it is, without a second copy of the weights.
        With ``ckpt_path=None`` the model's own weights are exported into ``dirpath`` as ``final``.
        The check batches come from the trainer's validation loader, else from ``datamodule``'s
        or ``model``'s own ``val_dataloader()`` (the command line's YAML). Used at fit end and
        by the command line; failures become a manifest, which is returned and kept in
        ``self.manifest``.

        Raises:
            ConfigurationError: when there is no sample or ``submodule`` does not resolve.
        """
        self._target(model)  # configuration errors are raised here, not recorded
        self._sample(model)
        dirpath, stem = self.destination(ckpt_path)
        try:
            copied = model if holds_weights else model_with_weights(trainer, model, ckpt_path)
            loader = validation_loader(trainer, model, datamodule)
            accuracy_data = loader if any(by_name(f).lower_precision for f in self.options.formats) else None
            target = self._target(copied)
            check_samples = samples_to_check(model, self._target(model), loader, self.check_batches, self.submodule)
            self.manifest = self._export(target, self._sample(copied), dirpath, stem, ckpt_path, accuracy_data,
                                         check_samples)  # fmt: skip
            if self.validate and loader is not None and is_overridden("validation_step", copied, pl.LightningModule):
                self.manifest = validate_artifacts(copied, target, loader, self.validate_batches, self.manifest,
                                                   dirpath, stem, self.metric_tolerance)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - fit must end normally; the error goes to the manifest
            self.manifest = failure_manifest(dirpath, stem, ckpt_path, self.options.formats, err)
        print_report(self.manifest, dirpath)
        return self.manifest

    def destination(self, ckpt_path: str | None) -> tuple[Path, str]:
        """The folder and stem of the export of ``ckpt_path`` (``final`` for the in-memory weights)."""
        dirpath = Path(self.dirpath) if self.dirpath is not None else Path(ckpt_path).parent
        return dirpath, Path(ckpt_path).stem if ckpt_path else self.FINAL_STEM

    def _export(
        self,
        target: nn.Module,
        sample: Any,
        dirpath: Path,
        stem: str,
        checkpoint: str | None,
        accuracy_data: DataLoader | None = None,
        check_samples: dict[str, Any] | None = None,
        preflight: bool = False,
    ) -> dict:
        """Call the engine with this callback's options.

        The preflight checks a compiled format by its capture (``aoti`` by ``pt2``, its
        ``preflight_as``): what can fail there is the capture, and compiling takes tens of seconds.
        It times nothing: its artifacts are thrown away.
        """
        options = self.options
        if preflight:  # the captures only: no compiling, no golden samples
            formats = tuple(dict.fromkeys(by_name(f).preflight_as or f for f in options.formats))
            bounds = options.executorch_bounds if any(by_name(f).bounded for f in formats) else None
            options = dataclasses.replace(options, formats=formats, executorch_bounds=bounds, golden_samples=False)
        return export_with(target, sample, dirpath, stem, options, checkpoint, accuracy_data, check_samples,
                           timed=not preflight)  # fmt: skip

    def _target(self, model: nn.Module) -> nn.Module:
        return target_of(model, self.submodule)

    def _sample(self, pl_module: nn.Module) -> Any:
        return sample_of(pl_module, self.input_sample if self.input_sample is not None else self._spec_sample)

    def _preflight(self, trainer: pl.Trainer, target: nn.Module, sample: Any) -> None:
        """Export the untrained model into a temporary folder, so problems show before training."""
        failure: str | None = None
        config_error = False
        if trainer.is_global_zero:
            with tempfile.TemporaryDirectory(prefix="lightning-deploy-preflight-") as folder:
                try:
                    manifest = self._export(target, sample, Path(folder), "preflight", None, preflight=True)
                    failed = [a for a in manifest["artifacts"] if not a["ok"]]
                    failure = "; ".join(f"{a['format']}: {a['error']}" for a in failed) or None
                except ConfigurationError as err:
                    failure, config_error = str(err), True
                except Exception as err:  # noqa: BLE001 - reported below, on every rank
                    failure = f"{type(err).__name__}: {err}"
        failure, config_error = trainer.strategy.broadcast((failure, config_error), src=0)
        if failure is None:
            return
        message = (
            f"ModelExport preflight: {type(target).__name__} cannot be exported as configured: {failure}"
            " HINT: fix the model's forward or the export options (formats, method, dynamic_axes),"
            " or pass preflight=False to skip this check."
        )
        if config_error:
            raise ConfigurationError(message)
        if self.strict:
            raise ExportError(message)
        rank_zero_warn(message)
        rank_zero_info("ModelExport: training goes on; the export at fit end will report the same failure.")
