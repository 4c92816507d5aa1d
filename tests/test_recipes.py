"""docs/design.md's recipes, each followed for real: a node kind, a verification check, an export option, a format.

A node kind and a check are entries of registries read at call time, added here for one test.
An option and a format are source edits (a dataclass field, a declaration): they are made in
a copy of the package, and the copy is run in a subprocess, so the test proves that the
recipe's edits, and nothing else, are enough.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from lightning_deploy import export, load
from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.schema import NODE_KINDS, NodeKind
from lightning_deploy.exporting.verifying.checks import GENERATED_CHECKS, GeneratedCheck
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.serving.codec import RequestCodec

PACKAGE = Path(__file__).parents[1] / "lightning_deploy"


class TwoAsDeque(nn.Module):
    def forward(self, x):
        return collections.deque([x * 2, x.sum(dim=1, keepdim=True)])


def test_a_new_node_kind_is_one_registry_entry(tmp_path, monkeypatch):
    """A deque rebuilt as a deque (not a list): one NODE_KINDS entry, nothing else."""
    deque_kind = NodeKind("sequence", lambda node: range(len(node["items"])), lambda value, label: f"{value}[{label}]",
                          types=(collections.deque,), rebuild=collections.deque)  # fmt: skip
    monkeypatch.setitem(NODE_KINDS, "deque", deque_kind)
    manifest = export(TwoAsDeque(), torch.randn(2, 3), tmp_path, "m", formats=["onnx", "torchscript"])
    assert manifest["outputs"]["schema"]["tree"]["kind"] == "deque"
    assert [a["ok"] for a in manifest["artifacts"]] == [True, True], [a["error"] for a in manifest["artifacts"]]
    for artifact in manifest["artifacts"]:
        model = load(tmp_path / artifact["path"])
        for batch in (1, 5):  # the straight-line call (ONNX on the CPU) and the general path build it alike
            x = torch.randn(batch, 3)
            got = model(x)
            assert type(got) is collections.deque, (artifact["format"], type(got))
            torch.testing.assert_close(got[0], x * 2)
            torch.testing.assert_close(got[1], x.sum(dim=1, keepdim=True))
            numpy_got = model(x.numpy())
            assert type(numpy_got) is collections.deque
    contract = IOContract.from_manifest(manifest, tmp_path / "m.export.json")
    answer = RequestCodec(contract).answer([torch.ones(1, 3).numpy(), torch.ones(1, 1).numpy()])
    assert answer == [[[1.0, 1.0, 1.0]], [[1.0]]]  # JSON: a sequence kind is an array


class Clipped(nn.Module):
    def forward(self, x):
        return torch.where(x > 0.5, x, torch.zeros_like(x)) * 3


def test_a_new_verification_check_is_one_entry_run_on_every_artifact(tmp_path):
    """A check made by rule (all ones) runs on every artifact and is recorded; one the model cannot take is skipped."""
    ones = GeneratedCheck("all-ones sample", lambda tensors, dims, least: tuple(torch.ones_like(t) for t in tensors))
    refused = GeneratedCheck("empty sample", lambda tensors, dims, least: tuple(t[:, :0] for t in tensors))
    GENERATED_CHECKS.extend([ones, refused])
    try:
        manifest = export(Picky(), torch.randn(2, 3), tmp_path, "m", formats=["onnx", "torchscript"])
    finally:
        del GENERATED_CHECKS[-2:]
    for artifact in manifest["artifacts"]:
        assert artifact["ok"], artifact["error"]
        ran = {check["source"]: check for check in artifact["checks"]}
        assert ran["all-ones sample"]["ok"] and len(ran["all-ones sample"]["shapes"]) == 1, artifact["format"]
    skipped = {entry["source"]: entry["skipped"] for entry in manifest["skipped_checks"]}
    assert "the model itself fails on it" in skipped["empty sample"]
    sources = [check["source"] for check in manifest["samples"]["checks"]]  # and it travels with the artifacts
    assert "all-ones sample" in sources
    model = load(tmp_path / "m.onnx")
    torch.testing.assert_close(model(torch.ones(4, 3)), torch.full((4, 3), 3.0))


class Picky(Clipped):
    def forward(self, x):
        if x.shape[1] == 0:
            raise ValueError("no features")
        return super().forward(x)


def _copy_of_the_package(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(PACKAGE, root / "lightning_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path: Path, anchor: str, new: str) -> None:
    """Insert ``new`` after the one line holding ``anchor``."""
    text = path.read_text()
    assert text.count(anchor) == 1, (path, anchor)
    start = text.index(anchor)
    end = text.index("\n", start) + 1
    path.write_text(text[:end] + new + text[end:])


def _run(root: Path, code: str) -> str:
    """Run ``code`` with the copy first on the path; its stdout (a ``SystemExit(0)`` of ``--help`` is a success)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, capture_output=True, text=True,
                            timeout=600, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_new_export_option_is_its_field_and_a_parameter_of_the_same_name(tmp_path):
    """The recipe's three edits: the dataclass field, ModelExport's and export()'s parameters. It reaches the
    manifest from both, and the command line (jsonargparse reads ModelExport's signature) lists it."""
    root = _copy_of_the_package(tmp_path)
    package = root / "lightning_deploy"
    _edit(package / "exporting/options.py", "    golden_samples_max_mb: float = DEFAULT_MAX_MB", "    note: str = ''\n")
    _edit(
        package / "lightning/callback.py", "        golden_samples_max_mb: float = 32.0,", "        note: str = '',\n"
    )
    _edit(
        package / "exporting/engine.py", "    golden_samples_max_mb: float = DEFAULT_MAX_MB,", "    note: str = '',\n"
    )
    out = _run(
        root,
        f"""
        import json, torch
        from lightning_deploy import ModelExport, export
        from lightning_deploy.cli import main
        from lightning_deploy.exporting.options import ExportOptions
        manifest = export(torch.nn.Linear(3, 2), torch.randn(2, 3), {str(tmp_path / "a")!r}, "m", formats=["onnx"],
                          note="from export")
        callback = ModelExport(formats=["onnx"], checkpoint="final", dirpath={str(tmp_path / "b")!r},
                               note="from the callback", validate=False, preflight=False,
                               input_sample=torch.randn(2, 3))
        print(json.dumps([manifest["options"]["note"], callback.options.note]))
    """,
    )
    assert json.loads(out.splitlines()[-1]) == ["from export", "from the callback"]
    help_text = _run(root, "from lightning_deploy.cli import main; main(['export', '--help'])")
    assert "--note NOTE" in help_text


WRITER = '''
"""A TorchScript module frozen by ``torch.jit.freeze`` (weights folded into the graph)."""

from pathlib import Path

import torch

from lightning_deploy.exporting.methods.base import Capture, ExportContext, save_torchscript


def write_frozen(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """The traced module, frozen."""
    save_torchscript(torch.jit.freeze(capture.program.eval()), path)
'''


def test_a_new_format_is_one_declaration_and_its_writer(tmp_path):
    """``torchscript-frozen``: a declaration in formats.py and a writer module; run by the TorchScript runtime."""
    root = _copy_of_the_package(tmp_path)
    package = root / "lightning_deploy"
    (package / "exporting/methods/frozen.py").write_text(WRITER)
    _edit(package / "formats.py", "FORMATS: tuple[Format, ...] = (",
          '    Format("torchscript-frozen", ".frozen.pt", "torchscript", (("trace", "frozen:write_frozen"),),'
          " preference=9),\n")  # fmt: skip
    out = _run(
        root,
        f"""
        import json, torch
        from lightning_deploy import ModelExport, export, load
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
        manifest = export(model, torch.randn(2, 3), {str(tmp_path)!r}, "m", formats=["torchscript-frozen", "onnx"])
        entry = manifest["artifacts"][0]
        assert entry["ok"] and entry["path"] == "m.frozen.pt", entry
        artifact = load({str(tmp_path / "m.export.json")!r}, format="torchscript-frozen")
        for batch in (1, 7):
            x = torch.randn(batch, 3)
            torch.testing.assert_close(artifact(x), model(x))
        ModelExport(formats=["torchscript-frozen"])  # the callback's formats are the declarations'
        print(json.dumps([entry["format"], entry["runtime"], len(entry["checks"])]))
    """,
    )
    fmt, runtime, checks = json.loads(out.splitlines()[-1])
    assert (fmt, runtime) == ("torchscript-frozen", runtime_module("torchscript").RUNTIME) and checks >= 3
