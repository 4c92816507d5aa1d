"""detectron2's reference models, both routes, TorchScript and ONNX: exported, then re-checked without detectron2.

For each model of ``detectron2_zoo.MODELS`` (random weights, made non-degenerate), each route and
each export size (:data:`EXPORT_SIZES`: what is baked into a trace shows at the other):

- ``model``: the model itself, ``[{"image": CHW}]`` in, ``[{"instances": Instances}]`` out, as a
  user exports it (``dynamic_batch=False``, height and width dynamic);
- ``TracingAdapter``: detectron2's own adapter as its ``tools/deploy/export_model.py`` builds it
  (R-CNNs: ``inference(..., do_postprocess=False)``, ROI masks; RetinaNet: the model), the
  image tensor in;

``export()`` writes TorchScript and ONNX; then a **fresh process without detectron2** (its folder
off ``sys.path``, checked) runs every artifact marked ok through ``load()`` on three images it never
saw (256x384, 232x344, 32x32) and compares with the eager outputs computed here (detections
matched by box and score). The table goes into docs/coverage.md's "detectron2 models" section.

Usage: ``.venv/bin/python tools/docs/detectron2_table.py [--only NAME ...] [--out DIR] [--no-doc]``
(about 15 minutes on 2 cores for all twelve cases at one size; builds detectron2 first if needed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from detectron2_zoo import MODELS, build, detectron2_root, image

from lightning_deploy import export
from lightning_deploy.exporting.adapters import flatten_tree
from lightning_deploy.exporting.families import detectron2 as support

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "coverage.md"
SECTION = "## detectron2 models"
RECHECK_IMAGES = {"256x384": (256, 384, 11), "232x344": (232, 344, 12), "32x32": (32, 32, 13)}
EXPORT_SIZES = ((160, 224), (256, 384))
ROUTES = ("model", "TracingAdapter")


def exportable(model: torch.nn.Module, route: str, picture: torch.Tensor) -> tuple[torch.nn.Module, Any, dict]:
    """The module to export, its sample and its dynamic axes, for ``route``."""
    if route == "model":
        return model, ([{"image": picture}],), {"batched_inputs": {1: "height", 2: "width"}}
    from detectron2.export import TracingAdapter
    from detectron2.modeling import GeneralizedRCNN

    inference = None
    if isinstance(model, GeneralizedRCNN):  # as detectron2's export_model.py does: ROI masks, no resize

        def inference(model: torch.nn.Module, inputs: list[dict]) -> list[dict]:
            return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]

    adapter = TracingAdapter(model, [{"image": picture}], inference)
    return adapter, adapter.flattened_inputs, {"args": {1: "height", 2: "width"}}


def call_input(route: str, picture: torch.Tensor) -> Any:
    """The arguments the loaded artifact takes (the model's own for ``model``, the image for the adapter)."""
    return ([{"image": picture}],) if route == "model" else (picture,)


def run_case(name: str, route: str, root: Path, out: Path, size: tuple[int, int] = EXPORT_SIZES[0]) -> dict[str, Any]:
    """Export one model by one route at ``size``, save the eager outputs at the re-check images, re-check them."""
    folder = out / f"{name}-{route}-{size[0]}x{size[1]}"
    model = build(name, root)
    module, sample, axes = exportable(model, route, image(*size))
    start = time.perf_counter()
    manifest = export(module, sample, folder, name, formats=["torchscript", "onnx"], dynamic_batch=False,
                      dynamic_axes=axes)  # fmt: skip
    seconds = time.perf_counter() - start
    expected = {}
    with torch.no_grad(), support.support(module) as prepared:
        for key, (height, width, seed) in RECHECK_IMAGES.items():
            picture = image(height, width, seed)
            tree, leaves = flatten_tree(prepared(*call_input(route, picture)), "out", "output", ValueError)
            expected[key] = {"input": call_input(route, picture), "outputs": dict(zip(tree.names, leaves))}
    torch.save(expected, folder / "recheck.pt")
    recheck = subprocess.run(
        [sys.executable, __file__, "--recheck", str(folder / f"{name}.export.json")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    rechecked = json.loads(recheck.stdout.strip().splitlines()[-1]) if recheck.returncode == 0 else {}
    if recheck.returncode != 0:
        print(recheck.stderr[-2000:], file=sys.stderr)
    return {"name": name, "route": route, "size": f"{size[0]}x{size[1]}", "seconds": seconds, "manifest": manifest,
            "recheck": rechecked, "folder": folder}  # fmt: skip


def recheck(manifest_path: Path) -> dict[str, Any]:
    """In a process without detectron2: every ok artifact through ``load()`` at each re-check image."""
    from lightning_deploy import load
    from lightning_deploy.verification.compare import named_leaves
    from lightning_deploy.verification.detections import compare_outputs

    try:
        import detectron2  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("detectron2 is importable here; the re-check must run without it")
    manifest = json.loads(manifest_path.read_text())
    expected = torch.load(manifest_path.parent / "recheck.pt", weights_only=False)
    atol, rtol = manifest["options"]["atol"], manifest["options"]["rtol"]
    found: dict[str, Any] = {}
    for entry in manifest["artifacts"]:
        if not entry["ok"]:
            continue
        runner = load(manifest_path.parent / entry["path"])
        results = {}
        for key, case in expected.items():
            try:
                got = named_leaves(runner(*case["input"]), "out")
            except Exception as err:  # noqa: BLE001 - an ok artifact that fails here is what the table reports
                results[key] = {"ok": False, "error": f"{type(err).__name__}: {str(err)[:200]}"}
                continue
            want = case["outputs"]
            names = list(want)
            if set(got) != set(names):
                results[key] = {"ok": False, "error": f"leaves {sorted(got)} != {names}"}
                continue
            diffs, _ = compare_outputs(names, [torch.as_tensor(got[n]).numpy() for n in names],
                                            [want[n].numpy() for n in names], atol, rtol)  # fmt: skip
            failed = [d.describe(atol, rtol) for d in diffs if not d.ok]
            detections = len(next((v for n, v in want.items() if n.endswith("scores")), []))
            largest = max((d.max_abs for d in diffs if d.reason is None), default=0.0)
            results[key] = {"ok": not failed, "detections": detections, "error": "; ".join(failed)[:300] or None,
                            "max_abs_diff": largest}  # fmt: skip
        found[entry["format"]] = results
    return found


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of every case."""
    lines = [
        "| model | route | exported at | format | ok | method | checks passed | max abs diff | detections matched "
        "| fresh process, no detectron2: 256x384, 232x344, 32x32 | export s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for entry in row["manifest"]["artifacts"]:
            fmt = entry["format"]
            checks = f"{entry['checks_passed']}/{len(entry['checks'])}"
            diff = "-" if entry["max_abs_diff"] is None else f"{entry['max_abs_diff']:.2g}"
            matched = (entry.get("detections") or {}).get("matched", "-")
            if entry["ok"]:
                results = row["recheck"].get(fmt, {})
                recheck_text = (
                    ", ".join(
                        ("✅" if r["ok"] else "❌ " + (r["error"] or "")[:120]) + f" ({r.get('detections', '?')})"
                        for r in results.values()
                    )
                    or "❌ not re-checked"
                )
                state = "✅"
            else:
                recheck_text = "- (not ok)"
                state = "❌ " + (entry["error"] or "").replace("|", "/").replace("\n", " ")[:160]
            cells = [row["name"], row["route"], row["size"], fmt, state, entry["method"] or "-", checks, diff,
                     str(matched), recheck_text, f"{row['seconds']:.0f}"]  # fmt: skip
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    """Replace (or append) the detectron2 section of docs/coverage.md."""
    doc = DOC.read_text()
    body = f"{SECTION}\n\n{text}\n"
    if SECTION in doc:
        head, _, rest = doc.partition(SECTION)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        doc = head + body + ("\n" + tail if tail else "")
    else:
        doc = doc.rstrip() + "\n\n" + body
    DOC.write_text(doc)


def main() -> None:
    """Run the cases (or, with ``--recheck``, be the fresh process) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="these models only")
    parser.add_argument("--routes", nargs="*", choices=ROUTES, default=list(ROUTES))
    parser.add_argument("--out", type=Path, help="where to write the artifacts (default: a temporary folder)")
    parser.add_argument("--no-doc", action="store_true", help="print the table, leave docs/coverage.md alone")
    parser.add_argument("--recheck", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recheck:
        print(json.dumps(recheck(args.recheck)))
        return
    root = detectron2_root()
    if root is None:
        raise SystemExit("detectron2 could not be built (../shared/scripts/build-detectron2)")
    out = args.out or Path(tempfile.mkdtemp(prefix="detectron2-table-"))
    rows = []
    for name in args.only or MODELS:
        for route, size in itertools.product(args.routes, EXPORT_SIZES):
            rows.append(run_case(name, route, root, out, size))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    (out / "table.json").write_text(json.dumps(rows, default=str))
    print(text)
    if not args.no_doc:
        write_doc(_preamble() + text)


def _preamble() -> str:
    sizes = " and at ".join(f"{h}x{w}" for h, w in EXPORT_SIZES)
    return (
        "Generated by `.venv/bin/python tools/docs/detectron2_table.py` (detectron2 built from"
        " `../shared/third_party` by `../shared/scripts/build-detectron2`; random weights made non-degenerate,"
        f" `tools/models/detectron2_zoo.py`). Each case exported at {sizes} with `dynamic_batch=False` and"
        " height/width dynamic; checks are the export sample, the second sample (sizes grown), the synthetic"
        " sample (about a quarter of each side, new values). Every artifact marked ok is then run through"
        " `load()` in a fresh process without detectron2 on three images it never saw (detections per image in"
        " brackets). A max abs diff of 1 is a boolean mask pixel at the threshold (at most `rtol` of a mask's"
        " pixels may differ). PointRend's `TracingAdapter` ONNX rows: its raw mask probabilities move by ~1e-3"
        " when the input moves by one part in a million, in eager too (`tools/docs/detectron2_noise.py`), so"
        " passing a 1e-4 tolerance depends on the image. See [detectron2 models](detectron2.md).\n\n"
    )


if __name__ == "__main__":
    main()
