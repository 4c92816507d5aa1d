"""Sharded (torch.distributed.checkpoint) checkpoint directories: consolidated, rebuilt, exported beside.

Directories are written in Lightning's layout by ``tests/sharded_checkpoints.py``: from one
process, and from a real two-process gloo group in which each rank saves its own shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from digits import DigitsMLP
from sharded_checkpoints import lightning_checkpoint, save_from_one_process

from lightning_deploy import CheckpointError, ModelExport, load
from lightning_deploy.lightning.checkpoints import load_weights, rebuild

HERE = Path(__file__).parent
ROOT = HERE.parent


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _deploy(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(HERE)])}
    return subprocess.run([sys.executable, "-m", "lightning_deploy.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """An FSDP-layout directory from one process, and the model whose weights it holds."""
    root = tmp_path_factory.mktemp("one")
    torch.manual_seed(1)
    model = DigitsMLP(hidden=40).eval()
    directory = root / "epoch=1-step=16.ckpt"
    save_from_one_process(lightning_checkpoint(model, dict(model.hparams)), directory)
    return model, directory


@pytest.fixture(scope="module", params=["model", "state_dict"], ids=["fsdp-layout", "model-parallel-layout"])
def two_ranks(tmp_path_factory, request):
    """A directory written by a real two-process gloo group, each rank saving its dim-0 shards."""
    root = tmp_path_factory.mktemp(f"two-{request.param}")
    directory = root / "epoch=1-step=16.ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(HERE)])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000 + len(request.param)),
                           str(HERE / "sharded_checkpoints.py"), str(directory), request.param],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return directory, torch.load(root / "reference_weights.pt")


def test_two_ranks_wrote_one_shard_file_each(two_ranks):
    directory, _ = two_ranks
    assert sorted(p.name for p in directory.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]


def test_rebuild_consolidates_the_shards_of_both_ranks(two_ranks):
    directory, reference = two_ranks
    model = rebuild(DigitsMLP, directory)
    assert model.hparams.hidden == 48  # from meta.pt's hyper_parameters
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0)


def test_cli_export_of_a_two_rank_directory_matches_the_weights(two_ranks):
    directory, reference = two_ranks
    before = _digest(directory)
    result = _deploy("export", "--ckpt_path", str(directory), "--model", "digits.DigitsMLP",
                     "--formats", "[onnx, torchscript]", cwd=directory.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((directory.parent / "epoch=1-step=16.export.json").read_text())
    assert manifest["ok"] and manifest["checkpoint"].endswith("epoch=1-step=16.ckpt")
    assert (directory.parent / "epoch=1-step=16.onnx").is_file()  # beside the directory, not in it
    assert _digest(directory) == before  # the directory's bytes are untouched
    eager = DigitsMLP(hidden=48)
    eager.load_state_dict(reference)
    x = torch.rand(5, 64)
    for artifact in ("epoch=1-step=16.onnx", "epoch=1-step=16.torchscript.pt"):
        torch.testing.assert_close(load(directory.parent / artifact)(x), eager(x), atol=1e-5, rtol=1e-4)


def test_export_checkpoint_of_a_one_process_directory(one_process, tmp_path):
    model, directory = one_process
    before = _digest(directory)
    callback = ModelExport(formats=["onnx", "pt2"], dirpath=tmp_path)
    manifest = callback.export_checkpoint(DigitsMLP(hidden=40), str(directory))
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    assert (tmp_path / manifest["checkpoint"]).resolve() == directory.resolve()  # relative to the manifest
    assert _digest(directory) == before
    x = torch.rand(6, 64)
    for fmt in ("onnx", "pt2"):
        torch.testing.assert_close(load(tmp_path / "epoch=1-step=16.export.json", format=fmt)(x), model(x),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("shard", r"shard file\(s\) \['__0_0.distcp'\] listed in .metadata are missing"),
        ("metadata", r"not a torch.distributed.checkpoint: .metadata is missing"),
        ("meta", r"has no meta.pt"),
    ],
)
def test_a_partial_directory_is_refused_by_name_and_nothing_is_written(one_process, tmp_path, damage, message):
    _, intact = one_process
    directory = tmp_path / "broken.ckpt"
    directory.mkdir()
    for item in intact.iterdir():
        (directory / item.name).write_bytes(item.read_bytes())
    {"shard": directory / "__0_0.distcp", "metadata": directory / ".metadata", "meta": directory / "meta.pt"}[
        damage
    ].unlink()
    with pytest.raises(CheckpointError, match=message) as caught:
        rebuild(DigitsMLP, directory)
    assert str(directory) in str(caught.value)
    result = _deploy("export", "--ckpt_path", str(directory), "--model", "digits.DigitsMLP", cwd=tmp_path)
    assert result.returncode == 2 and str(directory) in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.ckpt"]  # no artifact, no manifest
    callback = ModelExport(formats=["onnx"], dirpath=tmp_path / "out")
    manifest = callback.export_checkpoint(DigitsMLP(hidden=40), str(directory))
    assert not manifest["ok"] and str(directory) in manifest["artifacts"][0]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["broken.export.json"]


def test_weights_of_another_model_are_refused(one_process):
    _, directory = one_process
    with pytest.raises(CheckpointError, match=r"other shapes \['net.0.weight \[40, 64\] in the checkpoint, \[32, 64\]"):
        load_weights(DigitsMLP(hidden=32), directory)
    with pytest.raises(CheckpointError, match=r"missing \['extra.bias', 'extra.weight'\], unexpected \[\]"):
        wider = DigitsMLP(hidden=40)
        wider.extra = torch.nn.Linear(2, 2)
        load_weights(wider, directory)
