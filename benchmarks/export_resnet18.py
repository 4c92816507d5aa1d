"""Wall time of export() for resnet18, all three formats with verification, and its split.

Run: ``.venv/bin/python benchmarks/export_resnet18.py`` (prints a table; nothing is asserted).
"""

from __future__ import annotations

import tempfile
import time

import torch
import torchvision
from rich.console import Console
from rich.table import Table

from lightning_deploy import export


def main() -> None:
    """Export resnet18 once and print the wall time and its split."""
    torch.set_num_threads(2)
    model = torchvision.models.resnet18(weights=None)
    sample = torch.randn(2, 3, 224, 224)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = export(
            model,
            sample,
            folder,
            "resnet18",
            formats=["torchscript", "onnx", "pt2"],
            dynamic_axes={"x": {2: "height", 3: "width"}},
        )
        total = time.perf_counter() - start
    table = Table(title=f"export(resnet18, 2x3x224x224, 3 formats, verified): {total:.2f} s wall")
    for column in ("format", "method", "ok", "capture s", "save s", "verify s", "max abs diff", "max rel diff"):
        table.add_column(column)
    for artifact in manifest["artifacts"]:
        chosen = next(a for a in artifact["attempts"] if a["method"] == artifact["method"])
        seconds = chosen["seconds"]
        table.add_row(
            artifact["format"],
            artifact["method"],
            str(artifact["ok"]),
            f"{seconds.get('capture', 0.0):.2f}",
            f"{seconds.get('save', 0.0):.2f}",
            f"{seconds.get('verify', 0.0):.2f}",
            f"{artifact['max_abs_diff']:.2e}",
            f"{artifact['max_rel_diff']:.2e}",
        )
    Console(width=120).print(table)
    print("torch threads:", torch.get_num_threads(), "| capture is shared: pt2 reuses the ONNX export's program")


if __name__ == "__main__":
    main()
