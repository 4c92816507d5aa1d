"""The runtime side imports downward only: load() pulls in neither Lightning nor torch."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


def test_load_module_imports_neither_lightning_nor_torch():
    loaded = _modules_after("import lightning_deploy.runtime.loading")
    assert "lightning_deploy" in loaded
    assert "lightning" not in loaded and "pytorch_lightning" not in loaded
    assert "torch" not in loaded
    assert "onnx" not in loaded  # the checker is for verification only


def test_package_import_is_lazy():
    loaded = _modules_after("from lightning_deploy import load")
    assert "torch" not in loaded and "lightning" not in loaded
