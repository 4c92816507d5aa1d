"""Run every benchmark once, in sequence, and rewrite ``docs/performance.md`` from their output.

Run: ``.venv/bin/python benchmarks/run_all.py`` (about 35 minutes on 2 cores, serving.py 23 of them). Each script runs
in its own process with ``--doc``, so each writes its own section of the page.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from perfdoc import DOC

SCRIPTS = ["runtime.py", "export_cost.py", "memory.py", "sharded_memory.py", "cold_start.py", "int8_digits.py",
           "cpp_latency.py", "serving.py", "serving_overhead.py", "scaling.py", "cli_speed.py"]  # fmt: skip


def main() -> None:
    """Run the scripts one after another; stop at the first that fails."""
    folder = Path(__file__).parent
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(folder / script), "--doc", str(DOC)], check=True)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
