"""One export's shared state (:class:`Work`) and one method's try at one format (:class:`Attempt`).

A capture and the plain ONNX file are made once per method and shared by every format that
needs them; a failure is kept and re-raised to each, so that one broken method costs its
formats, never the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.manifest import artifact_name
from lightning_deploy.artifact.ranges import Ranges
from lightning_deploy.exporting.methods import EXPORTERS, Capture, write
from lightning_deploy.exporting.options import ExportOptions
from lightning_deploy.exporting.plan import Plan
from lightning_deploy.exporting.progress import StepLog
from lightning_deploy.formats import by_name
from lightning_deploy.verification.outcome import Verification

__all__ = ["Attempt", "Work", "result"]


@dataclasses.dataclass
class Work:
    """One export's shared state: what is captured and saved once per method is kept here."""

    plan: Plan
    options: ExportOptions
    staging: Path
    stem: str
    accuracy_data: Iterable[Any] | None
    captures: dict[str, Capture | Exception] = dataclasses.field(default_factory=dict)
    sources: dict[tuple[str, str], Path | Exception] = dataclasses.field(default_factory=dict)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)  # what one step makes for the others (int8.py)

    def __post_init__(self) -> None:
        self.steps = StepLog(f"lightning-deploy {self.stem}")
        self.contract: IOContract = self.plan.contract()  # the manifest's inputs and outputs

    @property
    def shared_sources(self) -> set[str]:
        """The formats others asked for are derived from (``onnx``): one file per method serves them all."""
        return {by_name(fmt).derived_from for fmt in self.options.formats} - {None}

    def capture(self, method: str) -> Capture:
        """The method's capture of the flat adapter, made on first use (a failure is kept and re-raised)."""
        if method not in self.captures:
            try:
                self.captures[method] = EXPORTERS[method].capture(self.plan.ctx)
            except Exception as err:  # noqa: BLE001 - any exporter failure is recorded, others go on
                self.captures[method] = err
        return result(self.captures[method])

    def source_file(self, source: str, method: str) -> Path:
        """The method's file of format ``source``, saved once into staging for the formats derived from it."""
        key = (source, method)
        if key not in self.sources:
            folder = self.staging / f"{source}-source-{method}"
            folder.mkdir()
            path = folder / artifact_name(self.stem, source)
            try:
                write(source, method, self.capture(method), path, self.plan.ctx)
                self.sources[key] = path
            except Exception as err:  # noqa: BLE001 - recorded by every format that needs it
                self.sources[key] = err
        return result(self.sources[key])


def result(value: Any) -> Any:
    """``value``, or raise it where it is the exception a first try recorded."""
    if isinstance(value, Exception):
        raise value
    return value


@dataclasses.dataclass
class Attempt:
    """One method's try at one format."""

    method: str
    folder: Path
    variant: str | None = None  # int8: "static" or "dynamic"
    verification: Verification | None = None
    derived: dict[str, Any] | None = None  # what a derivation pass did (fusions, quantised nodes)
    ranges: Ranges = dataclasses.field(default_factory=dict)  # the sizes it accepts (artifact/ranges.py)
    accuracy: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    requires: list[str] = dataclasses.field(default_factory=list)  # operator libraries the file calls
    device: str | None = None  # where it was verified
    device_note: str | None = None  # why that is not the module's device
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    ms_per_call: float | None = None  # int8: a call at each verified shape, timed against the other variant
    written: bool = False

    @property
    def ok(self) -> bool:
        """Written and, where verified, matched eager at every check."""
        return self.written and self.error is None

    @property
    def clean(self) -> bool:
        """Ok, and the capture gave no warning (a trace that warned is worth a fallback)."""
        return self.ok and not self.warnings
