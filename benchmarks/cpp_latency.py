"""C++ against Python: ``examples/cpp``'s ``infer --repeat 100`` beside ``load()`` on the same artifacts.

Run: ``.venv/bin/python benchmarks/cpp_latency.py [--doc docs/performance.md]`` (prints a table;
asserts nothing). Builds ``infer`` (CMake, g++), exports resnet18 (weights=None) to TorchScript
and AOTInductor, then times batch 1: ``infer`` reports the median of 100 runs after one warm-up
call; Python times ``load()``'s model called 100 times after one warm-up, same threads.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from perfdoc import argument_parser, publish

from lightning_deploy import export, load
from lightning_deploy.serving.flat_files import save_inputs

EXAMPLE = Path(__file__).parents[1] / "examples" / "cpp"
REPEAT = 100


def build(folder: Path) -> Path:
    """Configure and build ``infer`` as the docs say."""
    prefix = f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"
    subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(folder), prefix], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(folder)], check=True, capture_output=True)
    return folder / "infer"


def python_median_ms(model: Callable[[torch.Tensor], Any], sample: torch.Tensor) -> float:
    """Median of ``REPEAT`` calls of a ``load()``ed model, after one warm-up call."""
    model(sample)
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        model(sample)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    """Export, build, time; print (and with --doc write) the table."""
    parser = argument_parser(__doc__)
    args = parser.parse_args()
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:  # the rest of run_all.py still runs; the page keeps its last C++ section
        print(f"cpp_latency: not run here: examples/cpp is built with cmake and g++, and {missing} not found")
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    sample = torch.randn(1, 3, 224, 224)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        infer = build(root / "build")
        manifest = export(model, torch.randn(2, 3, 224, 224), root, "resnet18", formats=["torchscript", "aoti"])
        save_inputs(root / "resnet18.export.json", root / "in.pt", sample)
        for entry in manifest["artifacts"]:
            done = subprocess.run([str(infer), str(root / entry["path"]), str(root / "in.pt"), str(root / "out.pt"),
                                   "--repeat", str(REPEAT)], check=True, capture_output=True, text=True)  # fmt: skip
            cpp = float(re.search(r"median_ms ([0-9.]+)", done.stdout).group(1))
            python = python_median_ms(load(root / entry["path"]), sample)
            rows.append(["resnet18", "1", entry["format"], f"{cpp:.3f}", f"{python:.3f}", f"{python / cpp:.2f}x"])
    publish(
        "cpp",
        "C++: examples/cpp's infer against Python load() on the same artifacts",
        ["model", "batch", "artifact", "C++ infer median ms", "Python load() median ms", "Python / C++"],
        rows,
        [f"Median of {REPEAT} runs after one warm-up call each; {args.threads} threads (torch.set_num_threads in"
         " Python, libtorch's default of one per core in C++ on this 2-core machine); resnet18 weights=None,"
         " exported at batch 2 with the batch dynamic.",
         "infer times the artifact's call alone; load() adds binding, flattening and checks (microseconds)."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
