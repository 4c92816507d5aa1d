"""Faults: racing writers, SIGKILLs in the middle of an export, a full disk.

Real subprocesses throughout. The figures each test reaches are printed (``-s``); the slow
variants (``-m slow``) run the full counts: 50 kills.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from race_writer import writer_model

from lightning_deploy import load

HERE = Path(__file__).parent
RACE_ROUNDS = 20
FINAL_NAMES = ["model.torchscript.pt", "model.onnx", "model.pt2", "model.samples.npz", "model.export.json"]
FINAL_NAMES_BEST = [name.replace("model", "best") for name in FINAL_NAMES]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE)}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_racing_writers_end_with_one_writers_files_and_manifest(tmp_path, reliability):
    folder, signals = tmp_path / "shared", tmp_path / "signals"
    folder.mkdir()
    signals.mkdir()
    writers = {"a": 1, "b": 2}
    processes = [
        subprocess.Popen([sys.executable, str(HERE / "race_writer.py"), str(folder), name, str(seed),
                          str(RACE_ROUNDS), str(signals)], env=_env(), stderr=subprocess.PIPE, text=True)
        for name, seed in writers.items()
    ]  # fmt: skip
    models = {name: writer_model(seed) for name, seed in writers.items()}
    x = torch.randn(3, 16)
    winners = []
    for index in range(RACE_ROUNDS):
        (signals / f"go-{index}").touch()
        deadline = time.monotonic() + 120
        while not all((signals / f"done-{index}-{name}").exists() for name in writers):
            assert all(p.poll() is None for p in processes), [p.stderr.read()[-2000:] for p in processes]
            assert time.monotonic() < deadline, f"round {index} did not finish"
            time.sleep(0.01)
        manifest = json.loads((folder / "model.export.json").read_text())
        winner = manifest["checkpoint"].removesuffix(".ckpt")
        winners.append(winner)
        for fmt in ("torchscript", "onnx", "pt2"):  # sha256 checked by load(); outputs say whose weights
            torch.testing.assert_close(load(folder / "model.export.json", format=fmt)(x), models[winner](x),
                                       atol=1e-5, rtol=1e-4)  # fmt: skip
        assert sorted(p.name for p in folder.iterdir()) == sorted(FINAL_NAMES)  # no staging or temporary leftovers
    for process in processes:
        assert process.wait(timeout=60) == 0
    reliability["racing writer pairs (two processes, one stem, 3 formats)"] = (
        f"{RACE_ROUNDS} rounds, 0 mismatched manifests, 0 leftovers; the last to install won"
        f" ({winners.count('a')} a / {winners.count('b')} b)"
    )


KILL_CHILD = """
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from lightning_deploy import ModelExport
from digits import DigitsMLP
ckpt = sys.argv[1]
callback = ModelExport(formats=["torchscript", "onnx", "pt2"])
print("ready", flush=True)
callback.export_checkpoint(DigitsMLP(), ckpt)
"""


def _whole(path: Path) -> bool:
    """Whether an artifact under its final name is a whole file its own runtime opens."""
    if path.suffix == ".onnx":
        onnx.checker.check_model(str(path))
    elif path.name.endswith(".torchscript.pt"):
        torch.jit.load(str(path))
    elif path.suffix == ".pt2":
        torch.export.load(str(path))
    elif path.suffix == ".npz":
        with np.load(path) as samples:
            [samples[key] for key in samples.files]  # every array reads back whole
    else:
        json.loads(path.read_text())
    return True


def _kills(tmp_path: Path, count: int, reliability: dict[str, str]) -> None:
    import lightning.pytorch as pl

    sys.path.insert(0, str(HERE.parent / "examples"))
    from digits import DigitsMLP

    folder = tmp_path / "run"
    folder.mkdir()
    ckpt = folder / "best.ckpt"
    model = DigitsMLP()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(ckpt)
    digest = _sha(ckpt)
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "examples")])}
    rng = random.Random(0)
    checked = interrupted = 0
    manifest = folder / "best.export.json"
    for _ in range(count):
        before = _sha(manifest) if manifest.exists() else None
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(ckpt)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 3.0))  # the export takes about 3 s here after "ready"
        child.send_signal(signal.SIGKILL)
        child.wait()
        interrupted += (_sha(manifest) if manifest.exists() else None) == before  # killed before its manifest
        for name in FINAL_NAMES_BEST:
            if (folder / name).exists():
                assert _whole(folder / name), name
                checked += 1
        assert _sha(ckpt) == digest
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(left) <= 1  # the last killed writer's staging folder; each export removed the ones before
    subprocess.run([sys.executable, "-c", KILL_CHILD, str(ckpt)], env=env, check=True, capture_output=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["best.ckpt", *FINAL_NAMES_BEST])  # and that one too
    assert interrupted > 0  # some kills landed mid-export
    reliability[f"SIGKILLs at random points of an export ({count} runs)"] = (
        f"{interrupted} killed before their manifest; {checked} files under final names opened whole, 0 partial;"
        f" checkpoint byte-identical {count}/{count}; 0 staging folders left after the next export"
    )


def test_kills_never_leave_a_partial_file_under_a_final_name(tmp_path, reliability):
    _kills(tmp_path, 5, reliability)


@pytest.mark.slow
def test_fifty_kills(tmp_path, reliability):
    _kills(tmp_path, 50, reliability)


FULL_DISK_CHILD = """
import json, resource, signal, sys, warnings
warnings.filterwarnings("ignore")
import torch
from torch import nn
from lightning_deploy import export
from lightning_deploy.exporting.methods import base
if sys.argv[3] == "streamed":  # the path of weights above STREAMED_BYTES: torch's writer on the file by name
    base.STREAMED_BYTES = 0
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()  # 1 MB of weights
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit a write fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
manifest = export(model, torch.randn(2, 512), sys.argv[1], "model", formats=["onnx", "torchscript", "pt2"])
print(json.dumps({a["format"]: [a["ok"], a["error"]] for a in manifest["artifacts"]}))
"""


@pytest.mark.parametrize("writer", ["file object", "streamed"])
def test_a_full_disk_fails_the_formats_that_do_not_fit_and_the_process_survives(tmp_path, reliability, writer):
    folder = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(folder), str(200_000), writer],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]  # no SIGABRT from torch's zip writer
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(not ok and "File too large" in error for ok, error in outcome.values()), outcome
    # no partial file, nothing staged; the golden samples (a few kB, eager's) fit under the limit
    assert sorted(p.name for p in folder.iterdir()) == ["model.export.json", "model.samples.npz"]
    manifest = json.loads((folder / "model.export.json").read_text())
    assert [a["sha256"] for a in manifest["artifacts"]] == [None, None, None]
    if writer == "streamed":
        assert all("past this process's file size limit" in outcome[f][1] for f in ("torchscript", "pt2")), outcome
    reliability[f"a full disk (RLIMIT_FSIZE 200 kB, 1 MB of weights, {writer} writes)"] = (
        "process survived; onnx, torchscript, pt2 failed with 'File too large'; manifest written; 0 partial files"
    )


def test_checkpoints_from_elsewhere_are_read_without_unpickling_code(tmp_path, reliability):
    """``torch.load(weights_only=True)`` unless the user says the file is trusted."""
    sys.path.insert(0, str(HERE.parent / "examples"))
    from digits import DigitsMLP
    from models import Opaque

    model = DigitsMLP(hidden=24)
    ckpt = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"hidden": 24, "note": Opaque()},
                "pytorch-lightning_version": "2.6.6"}, ckpt)  # fmt: skip
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "examples")])}
    command = [sys.executable, "-m", "lightning_deploy.cli", "export", "--ckpt_path", str(ckpt), "--model",
               "digits.DigitsMLP", "--formats", "[onnx]"]  # fmt: skip
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "weights_only=True) refuses" in refused.stderr and "--trust_checkpoint" in refused.stderr
    assert not (tmp_path / "foreign.onnx").exists()
    trusted = subprocess.run([*command, "--trust_checkpoint"], env=env, capture_output=True, text=True, timeout=300)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    x = torch.rand(3, 64)
    torch.testing.assert_close(load(tmp_path / "foreign.onnx")(x), model(x), atol=1e-5, rtol=1e-4)
    reliability["a checkpoint pickling an object (CLI)"] = "refused (weights_only); exported with --trust_checkpoint"
