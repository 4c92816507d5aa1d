"""Per-step progress lines: on where stderr is a terminal (a real pty here), off in a pipe, forced by the env var."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

SCRIPT = (
    "import torch; from lightning_deploy import export;"
    " export(torch.nn.Linear(4, 2), torch.randn(2, 4), sys.argv[1], 'linear', formats=['onnx', 'torchscript'])"
)


def _export(tmp_path, terminal: bool, progress: str | None) -> str:
    """Run an export in a subprocess; return what it wrote to stderr (a pty where ``terminal``)."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_DEPLOY_PROGRESS"}
    if progress is not None:
        env["LIGHTNING_DEPLOY_PROGRESS"] = progress
    command = [sys.executable, "-c", f"import sys; {SCRIPT}", str(tmp_path)]
    if not terminal:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stderr
    controller, terminal_end = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=terminal_end, env=env)
    os.close(terminal_end)
    chunks = []
    while True:  # read while it runs: a full pty would block the child
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(300) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(
    ("terminal", "progress", "shown"),
    [(True, None, True), (False, None, False), (False, "1", True), (True, "0", False)],
)
def test_progress_lines(tmp_path, terminal, progress, shown):
    stderr = _export(tmp_path, terminal, progress)
    steps = [
        "lightning-deploy linear: onnx (export) capture done in",
        "lightning-deploy linear: onnx (export) verify done in",
        "lightning-deploy linear: torchscript (trace) save done in",
    ]
    for step in steps:
        assert (step in stderr) == shown, (step, stderr[-2000:])
