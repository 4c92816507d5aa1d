"""The benchmarks' tables drawn as SVG charts (matplotlib), beside the pages in ``docs/charts/``.

``perfdoc.publish`` draws a section's chart whenever it writes the section's table, so re-running a
benchmark updates both. ``.venv/bin/python benchmarks/charts.py`` redraws every chart from the
tables on the pages as they stand, measuring nothing. Every SVG names the benchmark that measured
its figures and the machine, in its metadata (``dc:description``) and in its caption line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

CHART_FOLDER = "charts"  # beside the pages: docs/charts/SECTION.svg
OK, REFUSED, NOT_OK, OTHER = "#2e7d32", "#f9a825", "#c62828", "#bdbdbd"
FP32, INT8, BF16, EAGER = "#1565c0", "#ef6c00", "#6a1b9a", "#424242"
WIDTH_INCHES = 9.0  # about the site's content width at 100 dpi: text stays legible without zoom

Table = tuple[list[str], list[list[str]]]


@dataclasses.dataclass(frozen=True)
class Chart:
    """How one page section is drawn: the benchmark that writes the table, and the drawing."""

    script: str
    draw: Callable[[list[str], list[list[str]]], Figure]


def number(cell: str) -> float | None:
    """The first number in a cell (``"1.82x"``, ``"4.63 GiB"``, ``"29,259"``); ``None`` where there is none."""
    found = re.search(r"-?\d[\d,]*\.?\d*(e[-+]?\d+)?", cell)
    return float(found.group(0).replace(",", "")) if found else None


def _column(columns: list[str], rows: list[list[str]], name: str) -> list[str]:
    index = columns.index(name)
    return [row[index] for row in rows]


def _log_axis(ax: plt.Axes) -> None:
    """A log scale ticked at 1, 2 and 5 of each decade, labelled with plain numbers (0.05, 2, 300)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _latency(columns: list[str], rows: list[list[str]]) -> Figure:
    """Per model and batch: eager and each artifact through ``load()``, ms per call on a log scale, fastest marked.

    Colours: eager grey, float32 artifacts blue, int8 orange, bfloat16 purple (the bar names say
    which, so no legend); the fastest float32 artifact is outlined and its speed-up over eager written.
    """
    groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
    cells = (_column(columns, rows, name) for name in ("model", "batch", "runtime", "ms (fastest round)"))
    for model, batch, runtime, ms in zip(*cells, strict=True):
        if runtime == "eager" or runtime.endswith("(load)"):
            groups.setdefault((model, batch), []).append((runtime.removesuffix(" (load)"), number(ms)))
    figure, axes = plt.subplots(
        (len(groups) + 1) // 2,
        2,
        figsize=(WIDTH_INCHES, 2.6 * ((len(groups) + 1) // 2)),
        squeeze=False,
        layout="constrained",
    )
    for ax, ((model, batch), bars) in zip(axes.flat, groups.items(), strict=False):
        names = [name for name, _ in bars]
        values = [value for _, value in bars]
        colours = [EAGER if n == "eager" else INT8 if "int8" in n else BF16 if "bf16" in n else FP32 for n in names]
        ax.barh(names, values, color=colours)
        fastest = min((v, n) for n, v in bars if n != "eager" and "int8" not in n and "bf16" not in n)
        eager = dict(bars)["eager"]
        ax.barh([fastest[1]], [fastest[0]], color=FP32, edgecolor="black", linewidth=1.5)
        ax.annotate(f" fastest: {eager / fastest[0]:.2f}x eager", (fastest[0], names.index(fastest[1])),
                    va="center", fontsize=9)  # fmt: skip
        _log_axis(ax)
        ax.invert_yaxis()
        ax.set_title(f"{model}, batch {batch}", fontsize=11)
        ax.set_xlabel("ms per call (log scale, shorter is faster)", fontsize=9)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    return figure


def _serving(columns: list[str], rows: list[list[str]]) -> Figure:
    """Requests per second and p99 latency of each server setting."""
    labels = [", ".join(row[:3]) for row in rows]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(WIDTH_INCHES, 0.35 * len(rows) + 1.4), sharey=True, layout="constrained"
    )
    left.barh(labels, [number(v) for v in _column(columns, rows, "req/s")], color=FP32)
    _log_axis(left)
    left.set_xlabel("requests per second (log scale)", fontsize=9)
    right.barh(labels, [number(v) for v in _column(columns, rows, "p99 ms")], color=INT8)
    _log_axis(right)
    right.set_xlabel("p99 ms (log scale)", fontsize=9)
    left.invert_yaxis()
    for ax in (left, right):
        ax.tick_params(labelsize=9)
    return figure


def _soak(columns: list[str], rows: list[list[str]]) -> Figure:
    """The soak minute by minute: requests, failures (at a kill or elsewhere) and the server's resident memory."""
    minutes = [number(v) for v in _column(columns, rows, "minute")]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(WIDTH_INCHES, 5.4), sharex=True, layout="constrained")
    top.plot(minutes, [number(v) for v in _column(columns, rows, "requests")], marker="o", color=FP32)
    top.set_ylabel("requests", fontsize=9)
    top.set_ylim(bottom=0)
    at_kill = [number(v) for v in _column(columns, rows, "at a kill")]
    elsewhere = [number(v) for v in _column(columns, rows, "elsewhere")]
    middle.bar(minutes, at_kill, color=INT8, label="failed at a worker kill")
    middle.bar(minutes, elsewhere, bottom=at_kill, color=NOT_OK, label="failed elsewhere")
    middle.set_ylabel("failed", fontsize=9)
    middle.legend(fontsize=9, frameon=False)
    bottom.plot(minutes, [number(v) for v in _column(columns, rows, "RSS MiB")], marker="o", color=EAGER)
    bottom.set_ylabel("server RSS MiB", fontsize=9)
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("minute (one worker killed in each)", fontsize=9)
    for ax in (top, middle, bottom):
        ax.tick_params(labelsize=9)
    return figure


def _bars(label_columns: int, value: str, axis: str) -> Callable:
    """A horizontal bar per row: ``value``'s number, labelled by the row's first ``label_columns`` cells."""

    def draw(columns: list[str], rows: list[list[str]]) -> Figure:
        figure, ax = plt.subplots(figsize=(WIDTH_INCHES, 0.32 * len(rows) + 1.2), layout="constrained")
        ax.barh([", ".join(row[:label_columns]) for row in rows], [number(v) for v in _column(columns, rows, value)],
                color=FP32)  # fmt: skip
        ax.invert_yaxis()
        ax.set_xlabel(axis, fontsize=9)
        ax.tick_params(labelsize=9)
        return figure

    return draw


def _big_models(columns: list[str], rows: list[list[str]]) -> Figure:
    """Peak memory above the baseline, as a multiple of the weights: export and ``load()`` per format and size."""
    figure, ax = plt.subplots(figsize=(WIDTH_INCHES, 0.45 * len(rows) + 1.2), layout="constrained")
    labels = [f"{row[0].split(' (')[0]}, {row[1]} ({row[2]})" for row in rows]
    export = [number(v) for v in _column(columns, rows, "export / weights")]
    loaded = [number(v) or 0.0 for v in _column(columns, rows, "load() / weights")]
    positions = range(len(rows))
    ax.barh([p - 0.2 for p in positions], export, height=0.4, color=FP32, label="export")
    ax.barh([p + 0.2 for p in positions], loaded, height=0.4, color=INT8, label="load()")
    ax.axvline(1.3, color=FP32, linestyle="--", linewidth=1, label="export target 1.3x")
    ax.axvline(1.2, color=INT8, linestyle=":", linewidth=1.5, label="load() target 1.2x")
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_xlabel("peak resident memory above the baseline / weights (fit end: mapped checkpoint pages counted)",
                  fontsize=9)  # fmt: skip
    ax.tick_params(labelsize=9)
    ax.legend(fontsize=9, frameon=False, loc="lower right")
    return figure


CHARTS = {
    "runtime": Chart("benchmarks/runtime.py", _latency),
    "export-cost": Chart("benchmarks/export_cost.py", _bars(1, "seconds", "seconds")),
    "memory": Chart("benchmarks/memory.py", _bars(1, "above / weights", "peak above baseline / weights")),
    "serving": Chart("benchmarks/serving.py", _serving),
    "soak": Chart("benchmarks/soak.py", _soak),
    "scaling-serve": Chart("benchmarks/scaling.py", _bars(1, "req/s", "requests per second")),
    "big-models": Chart("benchmarks/big_models.py", _big_models),
}


def image_line(section: str, title: str) -> str:
    """The markdown that shows a section's chart, relative to a page in ``docs/``."""
    return f"![{title}]({CHART_FOLDER}/{section}.svg)"


def save(figure: Figure, path: Path, title: str, source: str, measured: str) -> None:
    """Write ``figure`` as SVG with its title, its source and the machine in the file's metadata and caption.

    Text stays text (``svg.fonttype: none``: the browser's font, searchable) and element ids are
    salted by the file name, so a chart redrawn from the same table writes the same bytes.
    """
    figure.suptitle(title, fontsize=12)
    figure.text(0.01, -0.01, f"{source}; {measured}", fontsize=8, color="#616161", va="top", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": path.name}):
        figure.savefig(path, format="svg", bbox_inches="tight",
                       metadata={"Title": title, "Description": f"{source}. {measured}", "Date": None})  # fmt: skip
    plt.close(figure)


def draw(section: str, title: str, table: Table, measured: str, pages: Path) -> bool:
    """Draw ``section``'s chart into ``pages/charts/`` when it has one; ``True`` if it was drawn."""
    chart = CHARTS.get(section)
    if chart is None:
        return False
    source = f"Drawn by benchmarks/charts.py from the table that {chart.script} wrote"
    save(chart.draw(*table), pages / CHART_FOLDER / f"{section}.svg", title, source, measured)
    return True


def read_sections(page: Path) -> dict[str, tuple[str, Table, str]]:
    """Every ``<!-- NAME -->`` section of a page: ``{NAME: (title, (columns, rows), measured line)}``."""
    found = {}
    for name, body in re.findall(r"<!-- ([\w-]+) -->\n(.*?)<!-- /\1 -->", page.read_text(encoding="utf-8"), re.DOTALL):
        lines = body.splitlines()
        title = next(line[3:] for line in lines if line.startswith("## "))
        table = [line.strip("|").split("|") for line in lines if line.startswith("|")]
        columns, rows = [c.strip() for c in table[0]], [[c.strip() for c in row] for row in table[2:]]
        measured = next((line[2:].rstrip(".") for line in lines if line.startswith("- Measured")), "")
        found[name] = (title, (columns, rows), measured)
    return found


def show(page: Path, section: str, title: str) -> None:
    """Put the chart's image line under ``section``'s heading on ``page`` where it is not there yet."""
    text = page.read_text(encoding="utf-8")
    heading = f"<!-- {section} -->\n## {title}\n"
    if heading in text and f"{heading}\n{image_line(section, title)}" not in text:
        page.write_text(text.replace(heading, f"{heading}\n{image_line(section, title)}\n"), encoding="utf-8")


def main() -> None:
    """Redraw every chart from the tables on ``docs/performance.md`` as they stand, and show each where its table is."""
    pages = Path(__file__).parents[1] / "docs"
    for section, (title, table, measured) in read_sections(pages / "performance.md").items():
        if draw(section, title, table, measured, pages):
            for page in pages.glob("*.md"):
                show(page, section, title)
            print(f"drew {pages / CHART_FOLDER / section}.svg")


if __name__ == "__main__":
    main()
