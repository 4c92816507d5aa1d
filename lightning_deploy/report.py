"""Report an export to the person: one table of its artifacts, their checks and what failed.

Importable without Lightning or torch, so that ``lightning-deploy show`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lightning_deploy.artifact.resolve import default_artifact

__all__ = ["print_report"]


def print_report(manifest: dict[str, Any], dirpath: Path | str) -> None:
    """One table: format, method, device, ok, max difference, checks passed (their shapes), ms a call, sha256, file.

    The artifact ``load(manifest)`` runs without ``format=`` is marked (the fastest verified
    one where the export timed them all, ``artifact/resolve.default_artifact``).
    """
    source = manifest.get("checkpoint") or "in-memory weights"
    table = Table(title=f"lightning-deploy: {source} -> {dirpath}")
    for column in ("format", "method", "device", "ok", "max abs diff", "checks", "ms/call", "sha256", "file / error"):
        table.add_column(column, overflow="fold")
    chosen = default_artifact(manifest["artifacts"])
    for a in manifest["artifacts"]:
        diff = a.get("max_abs_diff")
        ms = a.get("ms_per_call")
        table.add_row(
            a["format"] + ("\n[bold cyan]load() default[/]" if a is chosen and a["ok"] else ""),
            a["method"] or "-",
            a.get("device") or "-",
            "[green]yes[/]" if a["ok"] else "[red]no[/]",
            "-" if diff is None else f"{diff:.2e}",
            _checks(a),
            "-" if ms is None else f"{ms:.3f}",
            (a.get("sha256") or "-")[:12],
            "\n".join([_file_note(a) if a["ok"] else (a["error"] or "")[:300], *_tracer_note(a)]),
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    for record in manifest.get("tracking") or []:
        console.print(_tracking_line(record), highlight=False, soft_wrap=True)  # run ids and URIs are copied whole


def _tracking_line(record: dict[str, Any]) -> str:
    """Where a tracker's logging went (``tracking/publish.py``'s record), or why it failed."""
    tracker = record.get("tracker", "?")
    if record.get("error"):
        return f"[red]{tracker}: not logged[/]: {record['error'][:300]}"
    where = record.get("artifact_path") or record.get("artifact") or ""
    line = f"{tracker}: run {record.get('run_id')}, {where} ({len(record.get('files') or [])} artifact files)"
    registered = record.get("registered_model")
    return line + (f", registered {registered['model_uri']} ({registered['format']})" if registered else "")


def _checks(artifact: dict[str, Any]) -> str:
    """How many checks passed, then each check's input shapes (a failed one marked)."""
    checks = artifact.get("checks") or []
    if not checks:
        return "-"
    lines = [f"{sum(1 for c in checks if c['ok'])}/{len(checks)} passed"]
    for check in checks:
        shapes = " ".join("x".join(map(str, leaf)) for leaf in check["shapes"])
        lines.append(shapes if check["ok"] else f"[red]{shapes} failed[/]")
    return "\n".join(lines)


def _tracer_note(artifact: dict[str, Any]) -> list[str]:
    """The TracerWarnings of the chosen method's capture: where a trace took a Python value from a tensor."""
    found = [w for a in artifact.get("attempts") or [] if a["method"] == artifact["method"]
             for w in a.get("tracer_warnings") or []]  # fmt: skip
    if not found:
        return []
    return [f"[yellow]{len(found)} tracer warning(s): {found[0][:160]}[/]"]


def _file_note(artifact: dict[str, Any]) -> str:
    """The file, with what it needs at run time, its bounds, vacuous leaves and the int8 accuracy delta."""
    lines = [artifact["path"]]
    if artifact.get("bounds"):
        bounds = (f"{leaf}[{dim}]<={size}" for leaf, dims in artifact["bounds"].items() for dim, size in dims.items())
        lines.append(f"bounds {', '.join(bounds)}")
    if artifact.get("requires"):
        lines.append(f"requires {', '.join(artifact['requires'])}")
    if artifact.get("vacuous"):
        lines.append(f"[yellow]vacuous check: {', '.join(artifact['vacuous_leaves'][:3])}[/]")
    accuracy = artifact.get("accuracy") or {}
    if "delta" in accuracy:
        lines.append(f"top-1 {accuracy['artifact']:.4f} vs {accuracy['eager']:.4f} ({accuracy['delta']:+.4f})")
    return "\n".join(lines)
