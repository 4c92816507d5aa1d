"""``verify(path)``: re-run every artifact on its golden samples on this machine, and record the result here.

The artifacts travel; the machine that runs them has another CPU, other runtime versions,
perhaps a GPU. ``verify`` opens each artifact the manifest lists through ``load()`` (the path
users call), feeds it each golden check's inputs as ``forward``'s arguments, compares its
outputs with the eager outputs shipped beside it by the export's own rules and tolerances
(``outcome.py``), and times the artifacts side by side at the first check. The result is
added to the manifest's ``verified_on`` (one record per host, under the folder's install
lock; the export's own record is left as it was), so that ``load(manifest)`` ranks the
artifacts by this machine's timings.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.files import install_lock, write_json_atomic
from lightning_deploy.artifact.manifest import json_safe, manifest_path, read_manifest
from lightning_deploy.artifact.ranges import fits
from lightning_deploy.artifact.structure import Structure
from lightning_deploy.errors import ConfigurationError, LoadError, VerificationError
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.arrays import to_numpy
from lightning_deploy.runtime.host import describe_host
from lightning_deploy.runtime.loading import load
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.verification.compare import named_leaves
from lightning_deploy.verification.golden import GoldenCheck, read_samples
from lightning_deploy.verification.outcome import Verification
from lightning_deploy.verification.timing import SLOWER, seconds_per_call

__all__ = ["SKIP_VARIABLE", "HostVerification", "check_at_start", "verify"]

# Set to 1, this environment variable turns off the golden check where a model is opened to serve
# (MLflow's load_context; `lightning-deploy serve` has --no-verify).
SKIP_VARIABLE = "LIGHTNING_DEPLOY_NO_VERIFY"

# A row's status: reproduced here, differs here, cannot run here (its runtime is not installed), or failed at export.
REPRODUCED, DIFFERS, CANNOT_RUN, FAILED_AT_EXPORT = "reproduced", "differs", "cannot run here", "not ok at export"


@dataclasses.dataclass
class HostVerification:
    """What ``verify`` found on this machine: one row per artifact, and whether every ok artifact reproduced."""

    manifest: Path
    host: dict[str, Any]
    artifacts: list[dict[str, Any]]
    recorded: str | None  # why the record was not written, or None when it was

    @property
    def ok(self) -> bool:
        """Every artifact the manifest calls ok that ran here reproduced, and at least one ran."""
        return not self.failures

    @property
    def failures(self) -> list[str]:
        """One line per artifact that did not reproduce (or could not run where it was asked for)."""
        bad = [r for r in self.artifacts if r["status"] == DIFFERS or (r.get("asked") and r["status"] == CANNOT_RUN)]
        lines = [f"{row['format']}: {row['error']}" for row in bad]
        if not any(row["status"] in (REPRODUCED, DIFFERS) for row in self.artifacts):
            lines.append("no artifact could run here, so nothing was verified")
        return lines


def verify(
    path: str | Path,
    formats: Sequence[str] | None = None,
    device: str | None = None,
    record: bool = True,
) -> HostVerification:
    """Re-run the artifacts of ``path``'s manifest on their golden samples here; record the result in the manifest.

    Args:
        path: the manifest (``STEM.export.json``) or one of its artifacts.
        formats: the artifacts to check; default every one the manifest lists. An artifact
            named here whose runtime is not installed fails; unnamed, it is listed as not run.
        device: where to run them (``load(device=...)``); default each artifact's own choice.
        record: add this host's record to the manifest's ``verified_on`` (replacing its earlier
            one). A folder that cannot be written is said in the result, not raised.

    Returns:
        The rows and whether every ok artifact reproduced (:attr:`HostVerification.ok`).

    Raises:
        LoadError: no manifest, or no golden samples in it.
        IntegrityError: the samples file differs from the one the export wrote.
        ConfigurationError: ``formats`` names a format the manifest does not list.
    """
    manifest_file = manifest_path(path)
    manifest = read_manifest(manifest_file)
    checks = read_samples(manifest_file, manifest)
    entries = _chosen(manifest, manifest_file, formats)
    host = describe_host()
    rows, models = [], {}
    for entry in entries:
        row, model = _check_artifact(manifest_file, manifest, entry, checks, device)
        row["asked"] = formats is not None
        rows.append(row)
        if model is not None:
            models[entry["format"]] = model
    _time(models, checks[0], rows)
    result = HostVerification(manifest_file, host, rows, None)
    if record:
        result.recorded = _record(manifest_file, host, rows)
    return result


def check_at_start(path: str | Path, fmt: str, device: str | None, owner: str) -> str:
    """The golden check of the one artifact a server is about to open; a line for its log.

    Nothing is recorded in the manifest (a server's folder may be read-only, and starting one
    should not change its files).

    Raises:
        VerificationError: where the artifact does not reproduce here, naming the check, the leaf
            and the difference, and how to start anyway.
    """
    manifest_file = manifest_path(path)
    if not (read_manifest(manifest_file).get("samples") or {}).get("path"):
        return f"{owner}: {manifest_file.name} ships no golden samples, so {fmt} was not checked at start-up"
    result = verify(manifest_file, [fmt], device, record=False)
    if not result.ok:
        raise VerificationError(
            f"{owner}: the {fmt} artifact does not reproduce its golden samples on this machine:"
            f" {'; '.join(result.failures)}. HINT: run 'lightning-deploy verify {manifest_file}' for the table;"
            " re-export on a machine like this one, or skip the check (--no-verify, or"
            f" {SKIP_VARIABLE}=1) at your own risk."
        )
    (row,) = result.artifacts
    return (f"{owner}: {fmt} reproduced its {len(row['checks'])} golden checks on {row['device']}"
            f" (max abs diff {row['max_abs_diff']:.3g}, {row['ms_per_call']} ms a call)")  # fmt: skip


def _chosen(manifest: Mapping[str, Any], manifest_file: Path, formats: Sequence[str] | None) -> list[dict]:
    entries = [e for e in manifest.get("artifacts") or [] if isinstance(e, Mapping)]
    if formats is None:
        return entries
    listed = [e["format"] for e in entries]
    unknown = [f for f in formats if f not in listed]
    if unknown:
        raise ConfigurationError(
            f"verify(formats={list(formats)}): {manifest_file.name} lists no {unknown} artifact."
            f" HINT: choose among {listed}."
        )
    return [e for e in entries if e["format"] in formats]


def _check_artifact(
    manifest_file: Path,
    manifest: Mapping[str, Any],
    entry: Mapping[str, Any],
    checks: Sequence[GoldenCheck],
    device: str | None,
) -> tuple[dict[str, Any], ExportedModel | None]:
    """One artifact opened through ``load()`` and run at every golden check; its row, and the model where it ran."""
    fmt = entry["format"]
    row: dict[str, Any] = {"format": fmt, "ok": False, "status": FAILED_AT_EXPORT, "error": None}
    if not entry.get("ok"):
        row["error"] = f"not checked: the export recorded it as failed ({str(entry.get('error'))[:200]})"
        return row, None
    try:
        model = load(manifest_file, format=fmt, device=device)
    except LoadError as err:
        cause = err.__cause__ or err.__context__
        row["status"] = CANNOT_RUN if isinstance(cause, ImportError) else DIFFERS
        row["error"] = str(err)
        return row, None
    atol, rtol = _tolerance(manifest, entry)
    outcome = _run_checks(model, checks, atol, rtol)
    row.update(
        ok=outcome.ok,
        status=REPRODUCED if outcome.ok else DIFFERS,
        runtime=model.runtime,
        device=model.device,
        tolerance={"atol": atol, "rtol": rtol},
        max_abs_diff=json_safe(outcome.max_abs_diff),
        max_rel_diff=json_safe(outcome.max_rel_diff),
        checks_passed=outcome.checks_passed,
        checks=outcome.checks,
        **({"skipped": outcome.skipped} if outcome.skipped else {}),
        detections=outcome.detections,
        error=outcome.error,
    )
    return row, model


def _tolerance(manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[float, float]:
    """The tolerance the export verified this artifact with (recorded in its entry; older ones: the options')."""
    recorded = entry.get("tolerance") or {}
    options = manifest.get("options") or {}
    atol, rtol = recorded.get("atol", options.get("atol", 1e-4)), recorded.get("rtol", options.get("rtol", 1e-3))
    return float(atol), float(rtol)


def _run_checks(model: ExportedModel, checks: Sequence[GoldenCheck], atol: float, rtol: float) -> Verification:
    """Each golden check as ``forward``'s arguments, its outputs compared with eager's by leaf name."""
    outcome = Verification(ok=True, runtime=model.runtime)
    for check in checks:
        shapes = [list(a.shape) for a in check.inputs.values()]
        if not fits(model.ranges, list(check.inputs), shapes):  # made for another artifact's sizes
            outcome.skipped.append({"source": check.source, "shapes": shapes, "reason": "outside its ranges"})
            continue
        try:
            args, kwargs = arguments(model.contract, check)
            got = model(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the artifact failed on this input here: the check fails, named
            outcome.failed(check.source, shapes, f"{type(err).__name__}: {err}")
            continue
        got_by_name = {name: to_numpy(leaf) for name, leaf in named_leaves(got, "out").items()}
        outcome.compared(check.source, shapes, got_by_name, check.outputs, atol, rtol)
    return outcome


def arguments(contract: IOContract, check: GoldenCheck) -> tuple[list[Any], dict[str, Any]]:
    """A golden check's input leaves as ``forward``'s positional and keyword arguments, by the I/O contract."""
    structure = Structure(contract.inputs.tree, root="input")
    bound = structure.unflatten([check.inputs[name] for name in structure.names])
    args, kwargs = contract.call.split(bound)
    return list(args), dict(kwargs)


def _time(models: Mapping[str, ExportedModel], check: GoldenCheck, rows: list[dict]) -> None:
    """Time every artifact that reproduced, side by side at the first check; a derived one against its source."""
    timed = {row["format"]: row for row in rows if row["status"] == REPRODUCED and row["format"] in models}
    if not timed:
        return
    args, kwargs = arguments(next(iter(models.values())).contract, check)  # one contract: the export's
    calls = [lambda model=models[fmt]: model(*args, **kwargs) for fmt in timed]
    for row, seconds in zip(timed.values(), seconds_per_call(calls, rounds=5)):
        row["ms_per_call"] = round(seconds * 1e3, 4)
    for fmt, row in timed.items():
        source = by_name(fmt).derived_from
        if source in timed:
            vs_source = round(timed[source]["ms_per_call"] / row["ms_per_call"], 3)
            row["speed"] = {"source": source, "source_ms_per_call": timed[source]["ms_per_call"],
                            "vs_source": vs_source, "slower_than_source": vs_source < SLOWER}  # fmt: skip


def _record(manifest_file: Path, host: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Add this host's record to ``verified_on`` (replacing its earlier one), atomically; why not, where it failed."""
    record = {
        "fingerprint": host["fingerprint"],
        "verified": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {k: v for k, v in host.items() if k != "fingerprint"},
        "ok": all(row["status"] != DIFFERS for row in rows),
        "artifacts": [{k: v for k, v in row.items() if k != "asked"} for row in rows],
    }
    try:
        with install_lock(manifest_file.parent):
            manifest = read_manifest(manifest_file)
            others = [r for r in manifest.get("verified_on") or [] if r.get("fingerprint") != host["fingerprint"]]
            manifest["verified_on"] = [*others, record]
            write_json_atomic(manifest_file, manifest)
    except (OSError, TimeoutError) as err:
        return f"not recorded in {manifest_file.name}: {err}"
    return None
