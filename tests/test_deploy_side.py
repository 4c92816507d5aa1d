"""The deployment side for real: fresh virtual environments with the documented install, no torch, no Lightning (slow).

Each environment installs this package from the checkout with its `onnx` extra (numpy, rich,
onnxruntime from the package registry), as a deployment machine would; the artifact folder is
copied there alone. The second environment has another onnxruntime version: another host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models import StructuredModel, structured_sample
from tampering import change_golden_output

from lightning_deploy import export

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
OTHER_ONNXRUNTIME = "1.24.4"  # any version the registry has that runs the file


def _environment(folder: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        f"{ROOT}[onnx]",
        *packages,
    ]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def environments(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    return _environment(root / "env"), _environment(root / "other", f"onnxruntime=={OTHER_ONNXRUNTIME}")


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})  # fmt: skip


def test_a_copied_folder_verifies_in_a_fresh_environment_and_a_second_host_is_recorded(environments, tmp_path):
    env, other = environments
    for python in (env, other):  # neither torch nor Lightning is there
        imports = _run(
            python, tmp_path, "-c", "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('lightning'))"
        )
        assert imports.stdout.strip() == "None None", imports.stdout + imports.stderr
    versions = [_run(p, tmp_path, "-c", "import onnxruntime; print(onnxruntime.__version__)").stdout.strip()
                for p in (env, other)]  # fmt: skip
    assert versions[1] == OTHER_ONNXRUNTIME and versions[0] != versions[1]

    made = tmp_path / "made"
    export(StructuredModel(), structured_sample(3), made, "model", formats=["onnx", "onnx-optimized", "torchscript"],
           check_samples={"validation batch 0": structured_sample(5)})  # fmt: skip
    folder = tmp_path / "deployed"
    shutil.copytree(made, folder)  # the folder alone: no model code beside it
    manifest_file = folder / "model.export.json"

    first = _run(env.parent / "lightning-deploy", folder, "verify", str(manifest_file))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "reproduced" in first.stdout and "cannot run here" in first.stdout  # torchscript: no torch here
    second = _run(other.parent / "lightning-deploy", folder, "verify", str(manifest_file))
    assert second.returncode == 0, second.stdout + second.stderr
    records = json.loads(manifest_file.read_text())["verified_on"]
    assert len(records) == 2 and records[0]["fingerprint"] != records[1]["fingerprint"]
    assert [r["host"]["versions"]["onnxruntime"] for r in records] == versions
    for record in records:
        rows = {row["format"]: row for row in record["artifacts"]}
        assert rows["onnx"]["status"] == rows["onnx-optimized"]["status"] == "reproduced"
        assert rows["onnx"]["checks_passed"] == len(rows["onnx"]["checks"]) == 4
        assert rows["onnx-optimized"]["speed"]["source"] == "onnx"

    # load(manifest) in the second environment ranks by the second host's timings, not the export's
    manifest = json.loads(manifest_file.read_text())
    here = {row["format"]: row["ms_per_call"] for row in records[1]["artifacts"] if row.get("ms_per_call")}
    fastest_there = min(here, key=here.get)
    for entry in manifest["artifacts"]:  # the export machine ranked the other float ONNX file first
        entry["ms_per_call"] = {"onnx": 9.0, "onnx-optimized": 9.0, "torchscript": 5.0}[entry["format"]]
        if entry["format"] in here and entry["format"] != fastest_there:
            entry["ms_per_call"] = 1.0
    manifest_file.write_text(json.dumps(manifest))
    chosen = _run(other, folder, "-c", f"from lightning_deploy import load; print(load({str(manifest_file)!r}).format)")
    assert chosen.stdout.strip() == fastest_there, chosen.stdout + chosen.stderr

    # one golden output changed (and its sha256 updated to match): verify names the leaf and fails
    source = change_golden_output(folder, "model", "out.parts.0", update_sha=True)
    changed = _run(env.parent / "lightning-deploy", folder, "verify", str(manifest_file), "--format", "onnx")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert f"at the {source}" in changed.stderr and "output 'out.parts.0'" in changed.stderr
