"""Report an export to the person: one table of its artifacts, their checks and what failed.

Importable without Lightning or torch, so that ``lightning-deploy show`` stays light.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lightning_deploy.artifact.ranges import span_text
from lightning_deploy.artifact.resolve import default_artifact
from lightning_deploy.formats import by_name

__all__ = ["print_report", "print_verification"]


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
            "-" if ms is None else f"{ms:.3f}" + _speed_note(a.get("speed")),
            (a.get("sha256") or "-")[:12],
            "\n".join([_file_note(a) if a["ok"] else (a["error"] or "")[:300], *_tracer_note(a)]),
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    checks = _checks_table(manifest["artifacts"])
    if checks is not None:
        console.print(checks)
    for fmt in dict.fromkeys(a["format"] for a in manifest["artifacts"] if a["ok"] and by_name(a["format"]).notice):
        console.print(f"[dim]{fmt}: {by_name(fmt).notice}.[/]", highlight=False, soft_wrap=True)
    if manifest.get("substitution"):
        console.print(_substitution_line(manifest["substitution"]), highlight=False, soft_wrap=True)
    for line in _metric_lines(manifest):
        console.print(line, highlight=False, soft_wrap=True)
    if manifest.get("samples") is not None:
        console.print(_samples_line(manifest["samples"]), highlight=False, soft_wrap=True)
    for record in manifest.get("verified_on") or []:
        console.print(_host_line(record), highlight=False, soft_wrap=True)
    for record in manifest.get("tracking") or []:
        console.print(_tracking_line(record), highlight=False, soft_wrap=True)  # run ids and URIs are copied whole


def print_verification(
    manifest_name: str, host: dict[str, Any], rows: list[dict[str, Any]], not_recorded: str | None
) -> None:
    """``lightning-deploy verify``'s table: per artifact, whether it reproduced here, the differences, ms a call."""
    flags = ", ".join(host.get("flags") or []) or "none of the listed flags"
    table = Table(title=f"lightning-deploy verify: {manifest_name} on {host.get('cpu')} ({flags})")
    for column in ("format", "runtime", "device", "here", "max abs diff", "checks", "ms/call", "vs source", "error"):
        table.add_column(column, overflow="fold")
    colours = {"reproduced": "green", "differs": "red", "cannot run here": "yellow", "not ok at export": "dim"}
    for row in rows:
        diff, ms = row.get("max_abs_diff"), row.get("ms_per_call")
        speed = row.get("speed") or {}
        table.add_row(
            row["format"],
            row.get("runtime") or "-",
            row.get("device") or "-",
            f"[{colours.get(row['status'], 'white')}]{row['status']}[/]",
            "-" if diff is None else f"{diff:.2e}",
            _verified_checks(row),
            "-" if ms is None else f"{ms:.3f}",
            _speed_note(speed).strip() or "-",
            (row.get("error") or "")[:400],
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    versions = ", ".join(f"{k} {v}" for k, v in (host.get("versions") or {}).items())
    console.print(f"host {host.get('fingerprint')}: {versions}", highlight=False, soft_wrap=True)
    console.print(not_recorded or f"recorded in {manifest_name} (verified_on)", highlight=False, soft_wrap=True)


def _speed_note(speed: dict[str, Any] | None) -> str:
    """Beside ms a call: the artifact against eager and, for a derived format, its source (slower marked)."""
    if not speed:
        return ""
    note = f"\n{speed['vs_eager']:.2f}x eager" if "vs_eager" in speed else ""
    if "vs_source" in speed:
        ratio = f"{speed['vs_source']:.2f}x {speed['source']}"
        note += f"\n[red]{ratio}, slower[/]" if speed["slower_than_source"] else f"\n{ratio}"
    return note


def _substitution_line(substitution: dict[str, Any]) -> str:
    """What was exported in place of ``forward``: what it drops, and the step that restores it on the host."""
    return (f"[yellow]exported instead of forward: {substitution.get('exported')}; load() returns no"
            f" {', '.join(substitution.get('dropped') or [])} ({substitution.get('why')}). On the host:"
            f" {substitution.get('host_step')}[/]")  # fmt: skip


def _metric_lines(manifest: dict[str, Any]) -> list[str]:
    """The model's own validation metrics, eager's and each artifact's (``ModelExport(validate=True)``), and notes."""
    lines = []
    for name, values in (manifest.get("metrics") or {}).items():
        cells = ", ".join(f"{fmt} {'-' if v is None else f'{v:.6g}'}" for fmt, v in values.items())
        lines.append(f"metric {name}: {cells}")
    validation = manifest.get("validation") or {}
    if lines:
        lines.insert(0, f"the model's validation metrics on {validation.get('batches')} batches, per artifact:")
    lines += [f"[yellow]validate: {note}[/]" for note in validation.get("notes") or []]
    return lines


def _samples_line(samples: dict[str, Any]) -> str:
    """The golden samples shipped with the artifacts: how many checks, the file's size, what the cap dropped."""
    if not samples.get("path"):
        why = samples.get("error") or f"{len(samples.get('dropped') or [])} checks dropped"
        return f"[yellow]golden samples: none shipped ({why})[/]"
    size = samples.get("bytes", 0) / 1e6
    line = f"golden samples: {samples['path']}, {len(samples['checks'])} checks, {size:.2f} MB"
    line += f" (cap {samples['max_mb']} MB)"
    dropped = "; ".join(f"{d['source']} ({d['reason']})" for d in samples.get("dropped") or [])
    return line + (f"; dropped: {dropped}" if dropped else "")


def _host_line(record: dict[str, Any]) -> str:
    """A ``verify`` record: the host, when, and how many artifacts reproduced there (those that did not, named)."""
    host = record.get("host") or {}
    rows = record.get("artifacts") or []
    ran = [r for r in rows if r.get("status") in ("reproduced", "differs")]
    failed = [r["format"] for r in rows if r.get("status") == "differs"]
    slower = [r["format"] for r in rows if (r.get("speed") or {}).get("slower_than_source")]
    line = (f"verified on {host.get('cpu')} ({', '.join(host.get('flags') or [])}) {record.get('verified')}:"
            f" {len(ran) - len(failed)}/{len(ran)} reproduced")  # fmt: skip
    if failed:
        line += f", [red]differ: {', '.join(failed)}[/]"
    if slower:
        line += f", [yellow]slower than their source there: {', '.join(slower)}[/]"
    return line


def _tracking_line(record: dict[str, Any]) -> str:
    """Where a tracker's logging went (``tracking/publish.py``'s record), or why it failed."""
    tracker = record.get("tracker", "?")
    if record.get("error"):
        return f"[red]{tracker}: not logged[/]: {record['error'][:300]}"
    where = record.get("artifact_path") or record.get("artifact") or ""
    line = f"{tracker}: run {record.get('run_id')}, {where} ({len(record.get('files') or [])} artifact files)"
    registered = record.get("registered_model")
    return line + (f", registered {registered['model_uri']} ({registered['format']})" if registered else "")


def _verified_checks(row: dict[str, Any]) -> str:
    """``passed/run`` of a ``verify`` row, and how many golden checks lay outside the artifact's ranges."""
    checks, skipped = row.get("checks") or [], row.get("skipped") or []
    text = f"{row.get('checks_passed', 0)}/{len(checks)}" if checks else "-"
    return text + (f" ({len(skipped)} outside its ranges)" if skipped else "")


def _checks(artifact: dict[str, Any]) -> str:
    """How many of the artifact's checks passed (each is a row of :func:`_checks_table`)."""
    checks = artifact.get("checks") or []
    if not checks:
        return "-"
    passed = sum(1 for c in checks if c["ok"])
    return f"{passed}/{len(checks)} passed" if passed == len(checks) else f"[red]{passed}/{len(checks)} passed[/]"


def _checks_table(artifacts: list[dict[str, Any]]) -> Table | None:
    """Each check by name with its input shapes, and whether each artifact passed it (``-``: not run there).

    The artifacts mostly share their checks (the same samples), so a row per check reads once what
    the main table would repeat per artifact; a check made at an artifact's own smallest sizes is
    its own row.
    """
    rows: dict[tuple[str, str], dict[int, bool]] = {}
    for index, artifact in enumerate(artifacts):
        for check in artifact.get("checks") or []:
            shapes = " ".join("x".join(map(str, leaf)) for leaf in check["shapes"])
            rows.setdefault((_check_name(check["source"]), shapes), {})[index] = check["ok"]
    if not rows:
        return None
    table = Table(title="checks: each artifact against eager")
    table.add_column("check")
    table.add_column("input shapes", overflow="fold")
    for artifact in artifacts:
        table.add_column(artifact["format"], justify="center")
    for (name, shapes), passed in rows.items():
        marks = [
            "-" if i not in passed else "[green]ok[/]" if passed[i] else "[red]failed[/]" for i in range(len(artifacts))
        ]
        table.add_row(name, shapes, *marks)
    return table


def _check_name(source: str) -> str:
    """A check's name for a table: ``export sample``, ``second sample``, ``synthetic sample``, ``validation batch 0``.

    The manifest's ``source`` also says how a check made by rule differs from the sample (``second
    sample (dynamic dims changed)``); the table keeps the name, and a user's own keys as they are.
    """
    name = re.sub(r" \(dynamic dims [^)]*\)", "", source)
    return re.sub(r", at the artifact's smallest sizes \(.*\)$", ", at its smallest sizes", name)


def _tracer_note(artifact: dict[str, Any]) -> list[str]:
    """The TracerWarnings of the chosen method's capture: where a trace took a Python value from a tensor."""
    found = [w for a in artifact.get("attempts") or [] if a["method"] == artifact["method"]
             for w in a.get("tracer_warnings") or []]  # fmt: skip
    if not found:
        return []
    return [f"[yellow]{len(found)} tracer warning(s): {found[0][:160]}[/]"]


def _file_note(artifact: dict[str, Any]) -> str:
    """The file, with what it needs at run time, the sizes it accepts, vacuous leaves and the int8 accuracy delta."""
    lines = [artifact["path"]]
    # the ranges (older manifests: an ExecuTorch entry's bounds alone)
    bounds = artifact.get("bounds") or {}
    ranges = artifact.get("ranges") or {
        leaf: {dim: [1, size] for dim, size in dims.items()} for leaf, dims in bounds.items()
    }
    if ranges:
        spans = (f"{leaf}[{dim}] {span_text(*span)}" for leaf, dims in ranges.items() for dim, span in dims.items())
        lines.append(f"accepts {', '.join(spans)}")
    if artifact.get("requires"):
        lines.append(f"requires {', '.join(artifact['requires'])}")
    if artifact.get("vacuous"):
        lines.append(f"[yellow]vacuous check: {', '.join(artifact['vacuous_leaves'][:3])}[/]")
    accuracy = artifact.get("accuracy") or {}
    if "delta" in accuracy:
        lines.append(f"top-1 {accuracy['artifact']:.4f} vs {accuracy['eager']:.4f} ({accuracy['delta']:+.4f})")
    return "\n".join(lines)
