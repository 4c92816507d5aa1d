"""Peak memory of exporting vit_b_16 (about 330 MB of float32 weights), relative to the weights.

Run: ``.venv/bin/python benchmarks/memory.py [--doc docs/performance.md]`` (prints a table;
asserts nothing). Each configuration runs in a fresh process: it builds vit_b_16
(weights=None), runs it once eagerly on the export sample (the state of a process at fit end),
reads its resident memory (the baseline), calls ``export()`` and reads the process's peak
resident memory (``ru_maxrss``). The figure is (peak - baseline) / weights.
"""

from __future__ import annotations

import json
import subprocess
import sys

from perfdoc import argument_parser, publish

CHILD = """
import json, resource, sys, tempfile, warnings
warnings.filterwarnings("ignore")
import torch, torchvision
from lightning_deploy import export
torch.set_num_threads({threads})

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

model = torchvision.models.vit_b_16(weights=None).eval()
sample = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    model(sample)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
baseline = rss()
with tempfile.TemporaryDirectory() as folder:
    manifest = export(model, sample, folder, "vit", formats={formats!r}, method={method!r})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
artifacts = [(a["format"], a["method"], a["ok"]) for a in manifest["artifacts"]]
print(json.dumps({{"weights": weights, "baseline": baseline, "peak": peak, "artifacts": artifacts}}))
"""

CONFIGS = [
    (["torchscript", "onnx"], "auto"),  # the callback's default
    (["onnx"], "auto"),
    (["torchscript"], "auto"),
    (["pt2"], "auto"),
]


def main() -> None:
    """One fresh process per configuration; print the table."""
    parser = argument_parser(__doc__)
    args = parser.parse_args()
    rows = []
    for formats, method in CONFIGS:
        code = CHILD.format(formats=formats, method=method, threads=args.threads)
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        above = result["peak"] - result["baseline"]
        made = ", ".join(f"{fmt} by {how}{'' if ok else ' (FAILED)'}" for fmt, how, ok in result["artifacts"])
        rows.append([", ".join(formats), method, made, f"{result['weights'] / 2**20:.0f}",
                     f"{result['baseline'] / 2**20:.0f}", f"{result['peak'] / 2**20:.0f}",
                     f"{above / 2**20:.0f}", f"{above / result['weights']:.2f}x"])  # fmt: skip
    publish(
        "memory",
        "Memory: peak resident memory of export(vit_b_16), above the process baseline",
        ["formats", "method", "made", "weights MiB", "baseline MiB", "peak MiB", "above MiB", "above / weights"],
        rows,
        ["Baseline: the model built and run once on the 2x3x224x224 export sample; peak: ru_maxrss after"
         " export() with verification (each artifact reloaded in its runtime and run at two shapes).",
         "Each row is a fresh process, so libraries that export() imports (onnx, onnxscript, onnxruntime)"
         " count in the figure.",
         "vit_b_16's ONNX weights are above EXTERNAL_DATA_BYTES (128 MiB), so they are written tensor by tensor"
         " to STEM.onnx.data rather than serialised inline."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
