"""How fast the command line answers, against ``python -c "import onnxruntime"`` in the same run.

Run: ``.venv/bin/python benchmarks/cli_speed.py [--repeat 15] [--doc docs/performance.md]``
(prints a table; asserts nothing). Each command runs as a fresh process, as a user types it;
the commands take turns (one run of each per round) so that a busy moment of the machine
falls on all of them alike, and the median of the rounds is reported. ``show`` and ``run``
read an ONNX artifact of a small MLP exported once before timing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from perfdoc import argument_parser, publish

from lightning_deploy import export

# The console script as pip installs it (what a user types), not ``python -m``: under ``-m`` the module is
# ``__main__``, and the import-path lookups jsonargparse makes through the package differ (issue 25).
_SCRIPT = Path(sys.executable).with_name("lightning-deploy")
CLI = (
    [str(_SCRIPT)]
    if _SCRIPT.is_file()
    else [sys.executable, "-c", "import sys; from lightning_deploy.cli import main; sys.exit(main())"]
)


def main() -> None:
    """Export a small model, time every command in turns, print (and with --doc write) the table."""
    parser = argument_parser(__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="rounds; every command runs once per round")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        export(model, torch.randn(2, 64), folder, "mlp", formats=["onnx"])
        np.savez(Path(folder) / "x.npz", input=np.random.rand(3, 64).astype(np.float32))  # Sequential.forward(input)
        commands = {
            'python -c "import onnxruntime"': [sys.executable, "-c", "import onnxruntime"],
            "lightning-deploy --help": [*CLI, "--help"],
            "lightning-deploy show mlp.export.json": [*CLI, "show", f"{folder}/mlp.export.json"],
            "lightning-deploy run mlp.onnx --input x.npz": [*CLI, "run", f"{folder}/mlp.onnx", "--input",
                                                             f"{folder}/x.npz"],
            "lightning-deploy export --help": [*CLI, "export", "--help"],
            "lightning-deploy serve --help": [*CLI, "serve", "--help"],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times['python -c "import onnxruntime"'])
    rows = [
        [name, f"{statistics.median(seconds) * 1e3:.0f}", f"{min(seconds) * 1e3:.0f}",
         f"{statistics.median(seconds) / reference:.2f}x"]
        for name, seconds in times.items()
    ]  # fmt: skip
    publish(
        "cli",
        "Command line: how fast each command answers (a fresh process each time)",
        ["command", "median ms", "fastest ms", "vs import onnxruntime"],
        rows,
        [f"Median of {args.repeat} rounds, the commands taking turns within each round; wall time of the whole"
         " process (interpreter start, imports, work, exit).",
         "Nothing but export imports jsonargparse (its parser is built from ModelExport's source, read with ast);"
         " show, run of ONNX and every --help import neither torch nor Lightning.",
         "Commands run as the installed console script (lightning-deploy), as a user types them; under python -m the"
         " package is looked up differently (issue 25: export --help took 6-7 s that way before)."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
