"""The model-coverage table: every row exported by ``export()`` and written to ``docs/coverage.md``.

Run: ``.venv/bin/python tools/docs/coverage_table.py [--only NAME ...] [--out docs/coverage.md] [--resume FILE]``
(the full zoo takes over two hours on 2 cores: ``--resume`` keeps each finished row in FILE, and a run cut
off goes on from the next row when started again with the same FILE). Every run also redraws the picture of
all the page's verdicts, ``docs/charts/coverage.svg``; ``--matrix`` only redraws it (after
``detectron2_table.py`` wrote its section, say).

Each row is exported three times: TorchScript by tracing, TorchScript by scripting, and ONNX,
``.pt2``, ExecuTorch and OpenVINO with ``method="auto"`` (one capture each way shared by the four;
ONNX and OpenVINO record which method made them). Every artifact is
verified at two shapes; a cell is ✅ only when its artifact verified, otherwise ❌ with the
short reason. Models are built with ``weights=None`` and made sane by ``zoo.non_degenerate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import inspect
import json
import platform
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Dict  # noqa: UP035 - TorchScript reads typing.Dict

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import charts
from peers import HF_MODELS, LIGHTNING_DEMOS, TIMM_MODELS, Peer, call_like_forward, relative_difference
from zoo import build_detection, non_degenerate

from lightning_deploy import export, load
from lightning_deploy.artifact.manifest import versions
from lightning_deploy.artifact.ranges import span_text


@dataclasses.dataclass
class Row:
    """One model of the table: how to build it, its sample, and its dynamic axes."""

    name: str
    kind: str
    build: Callable[[], nn.Module]
    sample: Callable[[], Any]
    options: dict[str, Any]
    note: str = ""


def _classifier(name: str, size: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return non_degenerate(torchvision.models.get_model(name, weights=None), size=size)

    return build


def _segmenter(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        return non_degenerate(model, size=160)

    return build


class SequenceTagger(nn.Module):
    """A TransformerEncoder taking ``{"x", "padding_mask"}``: the sequence row of the table."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(64, 8)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:  # noqa: UP006 - TorchScript reads typing.Dict
        """Per-token class logits; padded positions are masked out of attention and zeroed.

        Zeroing matters: eager PyTorch's fast path returns zeros there, the exported graphs
        (the regular path) return values computed from nothing, so padded outputs would differ.
        """
        padding = batch["padding_mask"]
        hidden = self.encoder(batch["x"], src_key_padding_mask=padding)
        return self.head(hidden).masked_fill(padding.unsqueeze(-1), 0.0)


def _sequence_sample() -> tuple[dict]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, 12:] = True
    return ({"x": torch.randn(2, 16, 64, generator=generator), "padding_mask": mask},)


def _images(batch: int, size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _image_list() -> tuple[list[torch.Tensor]]:
    """Two smooth random images (noise at 1/8 resolution, upsampled), like photographs.

    The detection models resize their input; ONNX Runtime's Resize places pixels slightly
    differently from eager ``interpolate`` (``zoo.py``), and the error scales with the image's
    gradient: white noise makes it as large as it can be, smooth images as small as real ones.
    """
    generator = torch.Generator().manual_seed(1)
    low = torch.rand(2, 3, 30, 40, generator=generator)
    return (list(torch.nn.functional.interpolate(low, size=(240, 320), mode="bilinear", align_corners=False)),)


SPATIAL = {"spatial": True}  # dims 2 and 3 of forward's first argument (named x or input) are dynamic
DETECTION = {"dynamic_batch": False, "dynamic_axes": {"images": {1: "height", 2: "width"}}}
ROWS = [
    *(
        Row(name, "detection", lambda name=name: build_detection(name), _image_list, DETECTION)
        for name in (
            "fasterrcnn_resnet50_fpn",
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "maskrcnn_resnet50_fpn",
            "keypointrcnn_resnet50_fpn",
            "retinanet_resnet50_fpn",
            "fcos_resnet50_fpn",
            "ssd300_vgg16",
            "ssdlite320_mobilenet_v3_large",
        )
    ),
    Row("fcn_resnet50", "segmentation", _segmenter("fcn_resnet50"), _images(2, 160), SPATIAL),
    Row(
        "deeplabv3_mobilenet_v3_large",
        "segmentation",
        _segmenter("deeplabv3_mobilenet_v3_large"),
        _images(2, 160),
        SPATIAL,
    ),
    Row(
        "lraspp_mobilenet_v3_large",
        "segmentation",
        _segmenter("lraspp_mobilenet_v3_large"),
        _images(2, 160),
        SPATIAL,
    ),
    Row("resnet18", "classification", _classifier("resnet18", 160), _images(2, 160), SPATIAL),
    Row("mobilenet_v3_small", "classification", _classifier("mobilenet_v3_small", 160), _images(2, 160), SPATIAL),
    Row("efficientnet_b0", "classification", _classifier("efficientnet_b0", 160), _images(2, 160), SPATIAL),
    Row("convnext_tiny", "classification", _classifier("convnext_tiny", 160), _images(2, 160), SPATIAL),
    Row(
        "vit_b_16",
        "classification",
        _classifier("vit_b_16", 224),
        _images(2, 224),
        {},
        "fixed 224x224: the position embedding has one length",
    ),
    Row(
        "swin_t",
        "classification",
        _classifier("swin_t", 224),
        _images(2, 224),
        {},
        "fixed 224x224: see the next row for dynamic height and width",
    ),
    Row(
        "swin_t (dynamic resolution)",
        "classification",
        _classifier("swin_t", 224),
        _images(2, 224),
        SPATIAL,
        "Swin pads each stage to its 7x7 window and turns the shift off where a map fits one window,"
        " branches on the size that a trace bakes in",
    ),
    Row("transformer_encoder", "sequence", SequenceTagger, _sequence_sample, {"dynamic_axes": {"batch": {1: "seq"}}}),
]


def run_row(row: Row, folder: Path) -> dict[str, Any]:
    """Export one row three ways; returns its cells and figures."""
    model, sample = row.build(), row.sample()
    options = dict(row.options)
    if options.pop("spatial", False):
        first = next(iter(inspect.signature(model.forward).parameters))
        options["dynamic_axes"] = {first: {2: "height", 3: "width"}}
    start = time.perf_counter()
    plans = {
        "trace": {"formats": ["torchscript"], "method": "trace"},
        "script": {"formats": ["torchscript"], "method": "script"},
        "auto": {"formats": ["onnx", "pt2", "executorch", "openvino"], "method": "auto"},
    }
    artifacts = {}
    for key, plan in plans.items():
        try:
            manifest = export(model, sample, folder / key, row.name, **plan, **options)
        except Exception as err:  # noqa: BLE001 - a row that cannot even start is a row of ❌
            manifest = {
                "artifacts": [
                    {
                        "format": f,
                        "ok": False,
                        "error": f"{type(err).__name__}: {err}",
                        "method": plan["method"],
                        "checked_shapes": [],
                    }
                    for f in plan["formats"]
                ]
            }
        for artifact in manifest["artifacts"]:
            artifacts[(key, artifact["format"])] = artifact
    return {"cells": artifacts, "seconds": time.perf_counter() - start}


def _cell(artifact: dict[str, Any], with_method: bool = False) -> str:
    if artifact["ok"]:
        extra = f" {artifact['method']}" if with_method else ""
        found = artifact.get("detections")
        limits = [f"{leaf}[{dim}] {span_text(*span)}" for leaf, dims in (artifact.get("ranges") or {}).items()
                  for dim, span in dims.items()]  # fmt: skip
        notes = [f"{found['matched']} dets matched"] if found else []
        notes += [f"accepts {', '.join(limits)}"] if limits else []
        return f"✅{extra}" + (f" ({'; '.join(notes)})" if notes else "")
    reason = " ".join((artifact.get("error") or "").split())[:110].replace("|", "/")
    return f"❌ {reason}"


def _shapes(artifacts: list[dict[str, Any]], image_list: bool) -> tuple[str, str]:
    """The resolutions and batch sizes that verified artifacts were checked at.

    For a list of images the batch is the list's length: fixed in flat graphs, free in the
    scripted TorchScript artifact (native I/O), whose lengths are listed apart.
    """
    verified = [a for a in artifacts if a["ok"]]
    checks = [c for a in verified for c in a["checked_shapes"]]
    if not checks:
        return "-", "-"
    spatial = {tuple(c[0][-2:]) for c in checks}
    resolution = "✅ " + ", ".join("x".join(map(str, s)) for s in sorted(spatial)) if len(spatial) > 1 else "fixed"
    if not image_list:
        return resolution, ", ".join(map(str, sorted({c[0][0] for c in checks})))
    lengths = {
        io: sorted({len(c) for a in verified if a["io"] == io for c in a["checked_shapes"]})
        for io in ("flat", "native")
    }
    batches = ", ".join(map(str, lengths["flat"]))
    if lengths["native"]:
        batches += f"; scripted: {', '.join(map(str, lengths['native']))}"
    return resolution, batches


def _row_line(row: Row, result: dict[str, Any]) -> str:
    cells = result["cells"]
    resolution, batches = _shapes(list(cells.values()), image_list=row.kind == "detection")
    if row.note:
        resolution = f"{resolution} ({row.note})"
    return (
        f"| {row.name} | {row.kind} | {_cell(cells[('trace', 'torchscript')])} | "
        f"{_cell(cells[('script', 'torchscript')])} | {_cell(cells[('auto', 'onnx')], True)} | "
        f"{_cell(cells[('auto', 'pt2')])} | {_cell(cells[('auto', 'executorch')])} |"
        f" {_cell(cells[('auto', 'openvino')], True)} | {resolution} | {batches} | {result['seconds']:.0f} s |"
    )


def update_rows(results: dict[str, dict[str, Any]], rows: list[Row], out: Path) -> None:
    """Replace the re-run rows' lines in the zoo's table (a new row goes after its predecessor); say so under it."""
    lines = out.read_text().splitlines()
    for row in rows:
        line = _row_line(row, results[row.name])
        index = next((i for i, old in enumerate(lines) if old.startswith(f"| {row.name} |")), None)
        if index is not None:
            lines[index] = line
            continue
        previous = ROWS[ROWS.index(row) - 1].name
        after = next(i for i, old in enumerate(lines) if old.startswith(f"| {previous} |"))
        lines.insert(after + 1, line)
    names = ", ".join(row.name for row in rows)
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | kind |"))
    end = next((i for i in range(header, len(lines)) if not lines[i].startswith("|")), len(lines))
    lines[end:end] = ["", f"Re-run alone on {datetime.date.today()}: {names}."]
    out.write_text("\n".join(lines) + "\n")


def write_table(results: dict[str, dict[str, Any]], rows: list[Row], out: Path, total: float) -> None:
    """Write the markdown table with the run's machine, versions and time, keeping the sections after it."""
    old = out.read_text() if out.exists() else ""
    later = old[old.find(PEER_MARKER) :] if PEER_MARKER in old else ""
    lines = [
        "# Model coverage",
        "",
        f"Generated by `tools/docs/coverage_table.py` on {datetime.date.today()} ({platform.machine()}, "
        f"{torch.get_num_threads()} threads), total {total / 60:.1f} min. Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if v)
        + ".",
        "",
        "Each cell: the artifact verified in its own runtime at two shapes (✅), or the short reason it did not (❌).",
        "Detection models are made non-degenerate first (`tools/models/zoo.py`); their outputs are compared order-"
        "insensitively. Batch sizes: for a list of images, the list length: fixed by the export sample in"
        " flat graphs, free in scripted TorchScript (native I/O, checked at 1, 2 and 3 images)."
        " ExecuTorch: the `.pte` lowered with XNNPACK, its dynamic dims bounded (default: batch 64, other axes"
        " twice the sample's size); OpenVINO: the IR run at float32.",
        "",
        "| model | kind | TorchScript-trace | TorchScript-script | ONNX (method) | .pt2 | ExecuTorch"
        " | OpenVINO (method) | dynamic resolution | batch sizes | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(_row_line(row, results[row.name]) for row in rows)
    out.write_text("\n".join(lines) + "\n" + (f"\n{later}" if later else ""))


CHANGES_MARKER = "## What changed since the last table"


def _cells(text: str) -> dict[tuple[str, str, str], str]:
    """Every cell of the page's tables, as ``{(section, row, column): cell}``.

    A row is named by its cells before the first verdict (detectron2's: model, route, size, format).
    """
    cells, section, header = {}, "", []
    for line in text.splitlines():
        if line.startswith("#"):
            section, header = line.lstrip("# "), []
        elif line.startswith("| model |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif line.startswith("| ") and header:
            values = [c.strip() for c in line.strip("|").split("|")]
            first = next((i for i, value in enumerate(values) if value[:1] in ("✅", "❌")), len(values))
            row = ", ".join(values[: max(first, 1)])
            cells.update({(section, row, column): value for column, value in zip(header, values, strict=False)})
    return cells


def _seconds(cell: str) -> float | None:
    number = cell.removesuffix(" s")
    return float(number) if number != cell and number.replace(".", "").isdigit() else None


def changes_section(before: str, after: str, since: str) -> list[str]:
    """A table of the cells whose verdict changed between two versions of this page, and of rows come or gone."""
    old, new = _cells(before), _cells(after)
    lines = [CHANGES_MARKER, "", f"Against the table published before this run ({since}): every cell whose verdict"
             " changed, and rows that came or went. A cell ok before and not now is explained after the table.",
             "", "| section | model | column | before | now |", "|---|---|---|---|---|"]  # fmt: skip
    keys = [*new, *(k for k in old if k not in new)]
    verdicts = [key for key in keys if (new.get(key) or old.get(key, ""))[:1] in ("✅", "❌")]
    for key in verdicts:
        was, now = old.get(key, "(no row)"), new.get(key, "(no row)")
        if was[:1] != now[:1]:
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {was[:90]} | {now[:90]} |")
    if len(lines) == 6:
        lines.append("| - | - | - | no verdict changed | |")
    times = [(key, _seconds(old[key]), _seconds(cell)) for key, cell in new.items() if key[2] == "time" and key in old]
    slower = [f"{key[1]} {was:.0f} s → {now:.0f} s" for key, was, now in times
              if was and now and not 1 / 1.5 < now / was < 1.5]  # fmt: skip
    if slower:
        lines += ["", f"Rows whose time changed by more than 1.5x: {'; '.join(slower)}."]
    return lines


def write_changes(before: str, out: Path) -> None:
    """Put :func:`changes_section` (against ``before``) between the zoo's table and the peers' sections."""
    generated = [line for line in before.splitlines() if line.startswith("Generated by")]
    since = generated[0].split(" on ")[1].split(" ")[0] if generated else "?"
    text = out.read_text()
    head, _, rest = text.partition(PEER_MARKER)
    head = head.split(f"\n{CHANGES_MARKER}")[0].rstrip("\n")
    section = "\n".join(changes_section(before, text, since))
    out.write_text(f"{head}\n\n{section}\n\n{PEER_MARKER}{rest}")


PEER_SECTIONS = {
    "Hugging Face transformers": HF_MODELS,
    "timm": TIMM_MODELS,
    "Lightning's demo classes": LIGHTNING_DEMOS,
}
PEER_MARKER = "## Models written by others"
PEER_FORMATS = ["onnx", "torchscript", "pt2", "executorch", "openvino"]


def run_peer(peer: Peer, folder: Path) -> dict[str, Any]:
    """Export one peer at batch 2 / length 8 (:data:`PEER_FORMATS`, method auto), then load() each at 3 / 11."""
    start = time.perf_counter()
    model = peer.build()
    try:
        manifest = export(model, peer.sample(2, 8), folder, "model", formats=PEER_FORMATS, **peer.options)
    except Exception as err:  # noqa: BLE001 - a configuration error is the row's finding
        return {"error": " ".join(f"{type(err).__name__}: {err}".split())[:160], "seconds": time.perf_counter() - start}
    sample = peer.sample(3, 11)
    want = call_like_forward(model, sample)
    loaded = {}
    for artifact in manifest["artifacts"]:
        if artifact["ok"]:
            try:
                got = call_like_forward(load(folder / artifact["path"]), sample)
                loaded[artifact["format"]] = relative_difference(got, want)
            except Exception:  # noqa: BLE001 - an ok artifact that load() cannot run is what this column exists for
                loaded[artifact["format"]] = float("nan")
    return {"manifest": manifest, "loaded": loaded, "seconds": time.perf_counter() - start}


def _peer_line(peer: Peer, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"| {peer.name} | ❌ {result['error']} | | | | | | {result['seconds']:.0f} s |"
    cells = {a["format"]: _cell(a, with_method=True) for a in result["manifest"]["artifacts"]}
    for a in result["manifest"]["artifacts"]:
        if a["vacuous"]:
            cells[a["format"]] += " (vacuous: outputs within tolerance of zero)"
    shape = "batch 3, length 11" if peer.sequence else "batch 3"
    checks = ", ".join(f"{fmt} {diff:.1e}" for fmt, diff in result["loaded"].items()) or "-"
    return (f"| {peer.name} | {cells['onnx']} | {cells['torchscript']} | {cells['pt2']} | {cells['executorch']} |"
            f" {cells['openvino']} | {shape}: {checks} | {result['seconds']:.0f} s |")  # fmt: skip


def write_peer_sections(out: Path) -> None:
    """Run every peer and replace the peer sections (after :data:`PEER_MARKER`, up to the next ``## `` section)."""
    lines = [
        PEER_MARKER,
        "",
        f"Generated by `tools/docs/coverage_table.py --peers` on {datetime.date.today()}. Tiny configs, random weights"
        ' (`tools/models/peers.py`). Each model exported at batch 2 (sequence length 8) with `method="auto"`, every'
        " artifact verified through `load()` at that shape and a second one (batch 3, length 12); then each ok"
        " artifact loaded again and compared with eager at batch 3 and length 11: the last column is the largest"
        " difference relative to each output leaf's scale.",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for title, peers in PEER_SECTIONS.items():
            lines += ["", f"### {title}", "", "| model | ONNX (method) | TorchScript (method) | .pt2 | ExecuTorch"
                      " | OpenVINO (method) | through load() at a new shape | time |",
                      "|---|---|---|---|---|---|---|---|"]  # fmt: skip
            for peer in peers.values():
                result = run_peer(peer, Path(folder) / peer.name.replace(" ", "_"))
                lines.append(_peer_line(peer, result))
                print(f"{peer.name}: {result['seconds']:.0f} s", flush=True)
    text = out.read_text() if out.exists() else ""
    head, _, rest = text.partition(PEER_MARKER)
    later = rest[rest.find("\n## ") :] if "\n## " in rest else ""  # sections other tools write (detectron2's)
    out.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n" + later)


MATRIX = "coverage"  # docs/charts/coverage.svg
MATRIX_TITLE = "Model coverage: each model's artifacts, per format"
STATES = {  # a cell's state: its colour and what the legend says
    "ok": (charts.OK, "ok: verified, load() matches eager"),
    "refused": (charts.REFUSED, "made, refused by verification (a mismatch or a failure at a check)"),
    "failed": (charts.NOT_OK, "could not be made (the export itself failed)"),
}


def _state(cell: str) -> str | None:
    """``ok``, ``refused`` (made, then refused at a check) or ``failed`` (not made); ``None`` for a non-verdict cell."""
    if cell.startswith("✅"):
        return "ok"
    if not cell.startswith("❌"):
        return None
    return "refused" if re.search(r"(mismatch in|failed) .*at the \w+ sample", cell) else "failed"


def matrix(text: str) -> dict[str, tuple[list[str], list[str], dict[tuple[str, str], str]]]:
    """Every verdict on the page as ``{section: (rows, columns, {(row, column): state})}``.

    detectron2's table has a row per format with one ``ok`` column: it is pivoted to a column per format.
    """
    found: dict[str, tuple[list[str], list[str], dict[tuple[str, str], str]]] = {}
    cells = _cells(text)
    pivoted = {section for section, _, column in cells if column == "ok"}
    for (section, row, column), cell in cells.items():
        if section.startswith(("What changed", "Models written by others")):
            continue
        if section in pivoted:  # detectron2: the row's last named cell is its format, its verdict in "ok"
            if column != "ok":
                continue
            *names, fmt = row.split(", ")
            row, column = ", ".join(names), fmt
        state = _state(cell)
        if state is None:
            continue
        rows, columns, states = found.setdefault(section, ([], [], {}))
        rows.append(row) if row not in rows else None
        columns.append(column) if column not in columns else None
        states[(row, column)] = state
    return found


def draw_matrix(page: Path) -> Path:
    """Draw the page's verdicts as a models x formats matrix (``docs/charts/coverage.svg``) and show it on the page."""
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    sections = matrix(page.read_text())
    heights = [len(rows) + 2 for rows, _, _ in sections.values()]
    figure, axes = plt.subplots(len(sections), 1, figsize=(charts.WIDTH_INCHES, 0.2 * sum(heights) + 1),
                                height_ratios=heights, layout="constrained")  # fmt: skip
    names = list(STATES)
    for ax, (section, (rows, columns, states)) in zip(axes, sections.items(), strict=True):
        codes = [[names.index(states[(r, c)]) if (r, c) in states else len(names) for c in columns] for r in rows]
        colours = ListedColormap([colour for colour, _ in STATES.values()] + [charts.OTHER])
        ax.imshow(codes, cmap=colours, vmin=0, vmax=len(names), aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(columns)), [c.removesuffix(" (method)") for c in columns], fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.xaxis.tick_top()
        ax.set_title(section, fontsize=9, loc="left")
        ax.set_xticks([x - 0.5 for x in range(1, len(columns))], minor=True)
        ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
        ax.grid(which="minor", color="white", linewidth=1)
        ax.tick_params(which="minor", length=0)
    figure.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c, _ in [*STATES.values(), (charts.OTHER, "")]],
                  labels=[label for _, label in STATES.values()] + ["not made for this model"],
                  loc="outside lower center", ncol=2, fontsize=8, frameon=False)  # fmt: skip
    generated = next(line for line in page.read_text().splitlines() if line.startswith("Generated by"))
    source = "Drawn by tools/docs/coverage_table.py from the tables that tools/docs/coverage_table.py and" \
             " tools/docs/detectron2_table.py wrote"  # fmt: skip
    path = page.parent / charts.CHART_FOLDER / f"{MATRIX}.svg"
    charts.save(figure, path, MATRIX_TITLE, source, generated.split(". Versions")[0].replace("`", ""))
    text = page.read_text()
    if charts.image_line(MATRIX, MATRIX_TITLE) not in text:
        table = text.index("\n| model | kind |")
        page.write_text(f"{text[:table]}\n{charts.image_line(MATRIX, MATRIX_TITLE)}\n{text[table:]}")
    return path


def _resumed(cache: Path | None) -> dict[str, dict[str, Any]]:
    """The rows a cut-off run finished (``--resume``): ``{name: {"cells": {(key, format): artifact}, "seconds"}}``."""
    if cache is None or not cache.exists():
        return {}
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    return {row["name"]: {"cells": {tuple(k.split("/")): a for k, a in row["cells"].items()}, "seconds": row["seconds"]}
            for row in rows}  # fmt: skip


def _keep(cache: Path | None, name: str, result: dict[str, Any]) -> None:
    """Append one finished row to the ``--resume`` file, so that a run cut off goes on from the next row."""
    if cache is not None:
        cells = {"/".join(key): artifact for key, artifact in result["cells"].items()}
        with cache.open("a") as file:
            file.write(json.dumps({"name": name, "cells": cells, "seconds": result["seconds"]}, default=str) + "\n")


# TorchScript reads a module's source from its file when it scripts it (``inspect.getsource`` with
# the line numbers Python loaded), not from the code in memory: a file edited while the table runs
# makes every later row compile the wrong lines (seen: SequenceTagger's ``forward`` read as its
# ``__init__`` after lines above it moved). The run stops instead; ``--resume`` goes on from there.
def _sources() -> dict[Path, str]:
    """The sha256 of each file whose models the table scripts: this tool, ``zoo.py`` and ``peers.py``."""
    files = [Path(__file__), Path(inspect.getfile(build_detection)), Path(inspect.getfile(Peer))]
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def _check_sources(at_start: dict[Path, str]) -> None:
    """Stop the run when a file of :func:`_sources` changed since it started."""
    changed = [str(path) for path, digest in _sources().items() if at_start[path] != digest]
    if changed:
        raise SystemExit(
            f"{', '.join(changed)} changed while the table ran: TorchScript would script the next rows from the"
            " edited file's lines. Start the same command again (with --resume FILE it goes on from the next row)."
        )


def main() -> None:
    """Run the rows (all, or ``--only``) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="row names to run (default: all); updates those rows in --out")
    parser.add_argument("--peers", action="store_true", help="run only the peer sections (HF, timm, Lightning)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[2] / "docs" / "coverage.md")
    parser.add_argument("--resume", type=Path, help="a file of finished rows: kept as each row ends, read on a re-run")
    parser.add_argument("--matrix", action="store_true", help="only redraw the coverage matrix from the page as it is")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    if args.matrix or args.peers:
        if args.peers:
            write_peer_sections(args.out)
        print(f"wrote {args.out} and {draw_matrix(args.out)}")
        return
    rows = [r for r in ROWS if not args.only or r.name in args.only]
    before = args.out.read_text() if args.out.exists() else ""
    results = _resumed(args.resume)
    sources = _sources()
    with tempfile.TemporaryDirectory() as folder:
        for row in rows:
            if row.name not in results:
                _check_sources(sources)
                results[row.name] = run_row(row, Path(folder) / row.name)
                _keep(args.resume, row.name, results[row.name])
            print(f"{row.name}: {results[row.name]['seconds']:.0f} s", flush=True)
    if args.only and args.out.exists():
        update_rows(results, rows, args.out)
    else:
        write_table(results, rows, args.out, sum(results[row.name]["seconds"] for row in rows))
        write_peer_sections(args.out)
        write_changes(before, args.out)
    print(f"wrote {args.out} and {draw_matrix(args.out)}")


if __name__ == "__main__":
    main()
