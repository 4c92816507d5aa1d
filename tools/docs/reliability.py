"""Run the fault and hostile-input tests with their full counts and write ``docs/reliability.md``.

Run: ``.venv/bin/python tools/docs/reliability.py`` (about 15 minutes on 2 cores: 50 SIGKILLs, 20
racing pairs, 1,000 fuzzed manifests, 10 failing DDP runs, a full disk, hostile inputs, a
server's killed worker, huge body and SIGTERM). The tests record their figures through the
``reliability`` fixture (``tests/conftest.py``), which writes the page when the session ends
and keeps the sections other scripts wrote (the soak's). Exits with pytest's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/test_faults.py", "tests/test_hostile_manifests.py", "tests/test_hostile_inputs.py",
         "tests/test_ddp.py", "tests/test_serve_robustness.py"]  # fmt: skip


def main() -> int:
    """Run the suite once with every count, slow cases included."""
    env = {**os.environ, "LIGHTNING_DEPLOY_RELIABILITY_DOC": str(ROOT / "docs" / "reliability.md")}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow", *TESTS]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
