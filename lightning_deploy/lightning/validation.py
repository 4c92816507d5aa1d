"""The model's own metrics per artifact: its validation loop run with eager, then with each artifact as ``forward``.

What a user measures is the metric their ``validation_step`` logs (accuracy, F1, loss), not the
largest output difference. So the first ``limit`` validation batches go through the
LightningModule's own ``validation_step`` (and its ``on_validation_epoch_start``/``_end``)
once with the eager module and once per verified artifact, opened through ``load()`` and
standing in for the exported module's ``forward``. Its ``self.log`` calls are captured here and
reduced as Lightning reduces them for validation (``reduce_fx``, weighted by batch size;
torchmetrics objects by their own ``compute()``); the module is detached from the trainer for
the runs, so nothing reaches the user's loggers, progress bar or callbacks a second time.

A ``validation_step`` that never calls the exported module's ``forward`` (it calls submodules
directly) would give eager's numbers under every artifact's name: then no artifact metric is
recorded, and the manifest says why.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from lightning_deploy.artifact.files import install_lock, write_json_atomic
from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX, json_safe
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.loading import load

__all__ = ["DEFAULT_TOLERANCE", "LOWER_PRECISION_TOLERANCE", "check_metric_tolerance", "validate_artifacts"]

DEFAULT_TOLERANCE = 1e-3  # a float32 artifact: its metrics move by rounding alone (an argmax tie flips rarely)
LOWER_PRECISION_TOLERANCE = 0.02  # int8 and bf16 artifacts: two points of accuracy, two hundredths of a loss


def check_metric_tolerance(value: Any, owner: str) -> float | dict[str, float] | None:
    """``metric_tolerance``: ``None`` (the defaults), one number >= 0, or ``{metric name: number}``."""
    numbers = value.values() if isinstance(value, Mapping) else [value]
    if value is None or (
        all(_tolerance_number(n) for n in numbers)
        and (not isinstance(value, Mapping) or all(isinstance(k, str) for k in value))
    ):
        return dict(value) if isinstance(value, Mapping) else value
    raise ConfigurationError(
        f"{owner}(metric_tolerance={value!r}): must be a number >= 0 or a mapping of metric names to numbers."
        " HINT: pass e.g. metric_tolerance=0.01 or {'val_acc': 0.01, 'val_loss': 0.05}, or None for the defaults."
    )


def _tolerance_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def validate_artifacts(
    module: pl.LightningModule,
    target: nn.Module,
    batches: Iterable[Any],
    limit: int,
    manifest: dict[str, Any],
    dirpath: Path,
    stem: str,
    tolerance: float | Mapping[str, float] | None,
) -> dict[str, Any]:
    """Run ``module``'s validation loop with eager and each ok artifact as ``target``'s ``forward``; record the metrics.

    The manifest gains ``metrics`` (``{name: {"eager": value, FORMAT: value}}``) and ``validation``
    (batches, tolerances, notes); an artifact whose metric moves by more than its tolerance is
    not ok, the error naming the metric and both values. Written back under the folder's lock.
    """
    eager_forward = target.forward
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return eager_forward(*args, **kwargs)

    validation: dict[str, Any] = {"batch_limit": limit, "batches": 0, "notes": []}
    try:
        logged = _run_loop(module, target, counted, batches, limit)
        eager = logged.reduced()
        validation["batches"] = logged.batches
    except Exception as err:  # noqa: BLE001 - the user's loop failed outside a Trainer: said, the export stands
        validation["notes"].append(f"validation_step failed with eager, so no metric was recorded: {_text(err)}")
        return _write(manifest, dirpath, stem, {}, validation)
    metrics = {name: {"eager": value} for name, value in eager.items()}
    if not metrics:
        validation["notes"].append("validation_step logged no metric (self.log), so there is nothing to compare")
    elif calls[0] == 0:
        validation["notes"].append(
            f"validation_step never calls {type(target).__name__}.forward (it calls submodules directly), so an"
            " artifact in its place would change nothing: no metric is recorded for the artifacts. HINT: call"
            " self(...) in validation_step, or compare the artifacts with check_batches alone."
        )
    else:
        for entry in manifest["artifacts"]:
            if entry["ok"]:
                _artifact_metrics(module, target, batches, limit, dirpath / (stem + MANIFEST_SUFFIX), entry, metrics,
                                  tolerance, validation)  # fmt: skip
    validation["tolerance"] = tolerance
    return _write(manifest, dirpath, stem, metrics, validation)


def _artifact_metrics(
    module: pl.LightningModule,
    target: nn.Module,
    batches: Iterable[Any],
    limit: int,
    manifest_file: Path,
    entry: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    tolerance: float | Mapping[str, float] | None,
    validation: dict[str, Any],
) -> None:
    """One artifact through ``load()`` as ``forward``; its metrics recorded, and compared with eager's."""
    fmt = entry["format"]
    try:
        artifact = load(manifest_file, format=fmt)
        got = _run_loop(module, target, artifact, batches, limit).reduced()
    except Exception as err:  # noqa: BLE001 - the artifact failed in the user's loop: that is a failure of it
        entry["ok"], entry["error"] = False, f"validate: the validation loop failed with {fmt}: {_text(err)}"
        return
    moved = []
    for name, values in metrics.items():
        if name not in got:
            continue
        values[fmt] = got[name]
        allowed = _allowed(name, fmt, tolerance)
        if not abs(got[name] - values["eager"]) <= allowed:
            moved.append(f"{name} {got[name]:.6g} vs eager {values['eager']:.6g} (tolerance {allowed:g})")
    if moved:
        entry["ok"] = False
        entry["error"] = (
            f"validate: the model's own metrics moved with {fmt}: {'; '.join(moved)}. The outputs matched eager"
            " within the export's tolerance, and the metric did not. HINT: tighten atol/rtol (or int8_rtol), or"
            " loosen metric_tolerance where the change is acceptable."
        )


def _allowed(name: str, fmt: str, tolerance: float | Mapping[str, float] | None) -> float:
    default = LOWER_PRECISION_TOLERANCE if by_name(fmt).lower_precision else DEFAULT_TOLERANCE
    if isinstance(tolerance, Mapping):
        return float(tolerance.get(name, default))
    return default if tolerance is None else float(tolerance)


def _run_loop(
    module: pl.LightningModule, target: nn.Module, forward: Callable[..., Any], batches: Iterable[Any], limit: int
) -> _Logged:
    """The first ``limit`` batches through ``validation_step`` with ``forward`` standing in; what it logged."""
    logged = _Logged()
    with _standing_in(module, target, forward, logged), torch.no_grad():
        for m in module.modules():
            if isinstance(m, torchmetrics.Metric):
                m.reset()
        if is_overridden("on_validation_epoch_start", module):
            module.on_validation_epoch_start()
        for index, batch in enumerate(batches):
            if index >= limit:
                break
            logged.batch_size = extract_batch_size(batch)
            module.validation_step(move_data_to_device(batch, module.device), index)
            logged.batches += 1
        if is_overridden("on_validation_epoch_end", module):
            module.on_validation_epoch_end()
    return logged


class _Logged:
    """``self.log`` as the validation loop reduces it: per name, values weighted by batch size, or a Metric's own."""

    def __init__(self) -> None:
        self.batches = 0
        self.batch_size = 1
        self.values: dict[str, list[tuple[float, int]]] = {}
        self.reduce: dict[str, Any] = {}
        self.metrics: dict[str, torchmetrics.Metric] = {}

    def log(self, name: str, value: Any, *args: Any, reduce_fx: Any = "mean", batch_size: int | None = None,
            **kwargs: Any) -> None:  # fmt: skip
        """Lightning's ``LightningModule.log``, captured."""
        if isinstance(value, torchmetrics.Metric):
            self.metrics[name] = value
            return
        number = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
        self.values.setdefault(name, []).append((number, batch_size or self.batch_size))
        self.reduce[name] = reduce_fx

    def reduced(self) -> dict[str, float]:
        found = {name: float(metric.compute()) for name, metric in self.metrics.items()}
        for name, pairs in self.values.items():
            fx = self.reduce[name]
            fx = getattr(fx, "__name__", fx)
            numbers = [v for v, _ in pairs]
            if fx in ("sum", "max", "min"):
                found[name] = {"sum": sum, "max": max, "min": min}[fx](numbers)
            else:  # "mean", as Lightning weights it: by each batch's size
                found[name] = sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
        return found


@contextlib.contextmanager
def _standing_in(module: pl.LightningModule, target: nn.Module, forward: Callable[..., Any],
                 logged: _Logged) -> Iterator[None]:  # fmt: skip
    """``forward`` as ``target``'s, ``self.log`` captured, the module detached from its trainer and in eval mode."""
    trainer, modes = module._trainer, {m: m.training for m in module.modules()}
    patched = ((target, "forward"), (module, "log"))
    own = {(obj, name): obj.__dict__[name] for obj, name in patched if name in obj.__dict__}
    target.forward = forward  # an instance attribute: nn.Module.__call__ calls self.forward
    module.log = logged.log
    module._trainer = None  # so that nothing reaches the user's loggers or callbacks
    module.eval()
    try:
        yield
    finally:
        for obj, name in patched:
            if (obj, name) in own:
                object.__setattr__(obj, name, own[(obj, name)])
            else:
                object.__delattr__(obj, name)
        module._trainer = trainer
        for m, training in modes.items():
            m.training = training


def _write(
    manifest: dict[str, Any], dirpath: Path, stem: str, metrics: dict[str, Any], validation: dict[str, Any]
) -> dict[str, Any]:
    manifest["metrics"] = {name: {k: json_safe(v) for k, v in values.items()} for name, values in metrics.items()}
    manifest["validation"] = validation
    manifest["ok"] = all(entry["ok"] for entry in manifest["artifacts"])
    with install_lock(dirpath):
        write_json_atomic(dirpath / (stem + MANIFEST_SUFFIX), manifest)
    return manifest


def _text(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:500]
