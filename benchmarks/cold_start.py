"""Cold start: a fresh process that ``load()``s an ONNX artifact and runs it once, against a raw ONNX Runtime script.

Run: ``.venv/bin/python benchmarks/cold_start.py [--repeats 15] [--doc docs/performance.md]`` (prints a table; asserts
nothing). Both child processes import what they need, open the model, build the same input
and run it once; the wall time of each whole process is measured, the median of
``--repeats`` runs taken. Also printed: the import time of ``lightning_deploy.runtime.loading`` on top
of ``onnxruntime`` (the torch-free path), and whether torch was imported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from perfdoc import argument_parser, publish

from lightning_deploy import export

OURS = """
import numpy as np
from lightning_deploy import load
model = load({path!r}, threads={threads})
model(np.zeros({shape}, dtype=np.float32))
"""

RAW = """
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
session = ort.InferenceSession({path!r}, options, providers=["CPUExecutionProvider"])
session.run(None, {{session.get_inputs()[0].name: np.zeros({shape}, dtype=np.float32)}})
"""

IMPORTS = """
import json, sys, time
start = time.perf_counter()
import onnxruntime
middle = time.perf_counter()
from lightning_deploy import load
end = time.perf_counter()
print(json.dumps({"onnxruntime": middle - start, "lightning_deploy": end - middle, "torch": "torch" in sys.modules}))
"""


def _wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    """Export resnet18 to ONNX, then time both child processes alternately."""
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as folder:
        export(torchvision.models.resnet18(weights=None), torch.randn(2, 3, 224, 224), folder, "resnet18", ["onnx"])
        path = str(Path(folder) / "resnet18.onnx")
        ours, raw = [], []
        for _ in range(args.repeats):  # alternate, so that disk and CPU state affect both alike
            ours.append(_wall(OURS.format(path=path, shape=shape, threads=args.threads)))
            raw.append(_wall(RAW.format(path=path, shape=shape, threads=args.threads)))
    imports = [json.loads(subprocess.run([sys.executable, "-c", IMPORTS], check=True, capture_output=True,
                                         text=True).stdout) for _ in range(args.repeats)]  # fmt: skip
    ort_import = statistics.median(i["onnxruntime"] for i in imports)
    ours_import = statistics.median(i["lightning_deploy"] for i in imports)
    torch_seen = any(i["torch"] for i in imports)
    rows = [[name, f"{statistics.median(times):.3f}", f"{min(times):.3f}",
             f"{statistics.median(times) / statistics.median(raw):.2f}x"]
            for name, times in (("load() then one call", ours), ("raw ONNX Runtime script", raw))]  # fmt: skip
    publish(
        "cold-start",
        f"Cold start: a fresh process runs resnet18 ONNX once at {list(shape)}",
        ["process", "median s", "min s", "vs raw"],
        rows,
        [f"Median of {args.repeats} processes each, alternating; {args.threads} ONNX Runtime threads.",
         f"Import time on the torch-free path: `import onnxruntime` {ort_import:.3f} s, then"
         f" `from lightning_deploy import load` {ours_import:.3f} s (torch imported: {torch_seen})."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
