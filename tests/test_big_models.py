"""Big models in bounded memory: the callback's copy maps the checkpoint, artifacts are timed one at a time,
and (slow) an 8 GB model goes through the callback and from its sharded directory.

The memory figures themselves are measured by ``benchmarks/big_models.py`` (peaks per format as
a ratio of the weights, in fresh processes); these tests hold the behaviour that bounds them.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from big_model import BigMLP
from lightning.pytorch.callbacks import ModelCheckpoint
from servers import running_server, serve_cli
from sharded_checkpoints import save_from_one_process
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_deploy import LoadError, ModelExport, export, load
from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.exporting.methods import onnx_passes, torch_export
from lightning_deploy.exporting.verifying import latency
from lightning_deploy.lightning.checkpoints import model_with_weights
from lightning_deploy.runtime.model import ExportedModel

HERE = Path(__file__).parent
ROOT = HERE.parent
FORMATS = ["onnx", "torchscript", "pt2"]


class TiedLM(pl.LightningModule):
    """A language-model head tied to its embedding (one Parameter under two names), as in most LMs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(2.0))
        self.mixers = [self.body.weight]  # a weight held by a plain attribute too, not only by its module
        self.example_input_array = torch.randint(0, 50, (2, 7))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.body(self.embed(tokens)))
        return self.head((hidden + 0.1 * hidden @ self.mixers[0]) * self.scale)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        return nn.functional.cross_entropy(self(tokens).flatten(0, 1), tokens.flatten())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randint(0, 50, (16, 7))), batch_size=4)


def test_the_callbacks_copy_maps_the_checkpoint_and_keeps_tied_weights(tmp_path):
    model = TiedLM()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    trainer = pl.Trainer(max_epochs=2, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(model)
    first = str(tmp_path / "epoch=0-step=4.ckpt")  # weights the trained model no longer holds
    before = {name: t.clone() for name, t in model.state_dict().items()}
    copy = model_with_weights(trainer, model, first)
    assert copy.head.weight is copy.embed.weight  # still one Parameter under two names
    assert copy.mixers[0] is copy.body.weight  # and the plain attribute holds the copy's weight, not the model's
    saved = torch.load(first, weights_only=True)["state_dict"]
    for name, tensor in copy.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert not torch.equal(copy.body.weight, model.body.weight)  # the first epoch's, not the last
    for name, tensor in model.state_dict().items():  # the trained model is not changed
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)
    assert first in Path("/proc/self/maps").read_text()  # the weights are the file's pages, not a copy
    copy.body.weight.data.add_(1.0)  # a private mapping: the file keeps its bytes
    torch.testing.assert_close(torch.load(first, weights_only=True)["state_dict"]["body.weight"], saved["body.weight"])
    tokens = torch.randint(0, 50, (5, 7))  # another batch than the example
    manifest = ModelExport(formats=["onnx", "pt2"]).export_checkpoint(model, first, trainer=trainer)
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    reference = model_with_weights(trainer, model, first)
    for fmt in ("onnx", "pt2"):
        torch.testing.assert_close(load(tmp_path / "epoch=0-step=4.export.json", format=fmt)(tokens),
                                   reference(tokens), atol=1e-5, rtol=1e-5)  # fmt: skip


def test_big_weights_are_timed_one_at_a_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(latency, "TIMED_ALONE_BYTES", 0)  # every model counts as big
    monkeypatch.setenv("LIGHTNING_DEPLOY_PROGRESS", "1")
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    manifest = export(model, torch.randn(4, 12), tmp_path, "mlp", formats=["onnx", "torchscript", "pt2"])
    assert manifest["ok"]
    assert "3 artifact(s) timed one at a time" in capsys.readouterr().err
    for entry in manifest["artifacts"]:
        assert entry["ms_per_call"] > 0 and entry["speed"]["eager_ms_per_call"] > 0
    x = torch.randn(9, 12)
    torch.testing.assert_close(load(tmp_path / "mlp.export.json")(x), model(x), atol=1e-5, rtol=1e-5)


def test_an_artifact_bigger_than_the_memory_available_is_refused_before_its_runtime_reads_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_export, "EXTERNAL_DATA_BYTES", 256)  # the weights go to a side file
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    manifest = export(model, torch.randn(4, 12), tmp_path, "mlp", formats=["onnx"])
    (entry,) = manifest["artifacts"]
    assert entry["ok"] and "mlp.onnx.data" in entry["files"]
    path, contract = tmp_path / "mlp.onnx", IOContract.from_manifest(manifest, tmp_path / "mlp.export.json")
    x = torch.randn(5, 12)
    torch.testing.assert_close(ExportedModel(contract, entry, path)(x), model(x), atol=1e-5, rtol=1e-5)
    available = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))  # fmt: skip
    with open(tmp_path / "mlp.onnx.data", "r+b") as data:  # sparse: as big as the machine's memory, on no disk
        data.truncate(available + 2**30)
    with pytest.raises(LoadError, match=r"mlp\.onnx: opening it in onnxruntime needs about [\d.]+ GB of memory"
                       r" \(the size of its files\) and this machine has [\d.]+ GB available"):  # fmt: skip
        ExportedModel(contract, entry, path)


PASSES = [("onnx-int8", "mlp.int8", 0.1), ("onnx-optimized", "mlp.optimized", 1e-5)]


@pytest.mark.parametrize(("fmt", "stem", "tolerance"), PASSES)
def test_onnx_passes_of_a_model_past_protobufs_limit_keep_the_weights_beside_each_graph(
    tmp_path, monkeypatch, fmt, stem, tolerance
):
    monkeypatch.setattr(onnx_passes, "EXTERNAL_BYTES", 0)  # every model counts as past it (2 GiB, met at 2.15 GB)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    manifest = export(model, torch.randn(8, 64), tmp_path, "mlp", formats=[fmt])
    (entry,) = manifest["artifacts"]
    assert entry["ok"], entry["error"]
    assert sorted(entry["files"]) == [f"{stem}.onnx", f"{stem}.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(stem)) == sorted(entry["files"])  # no more
    x = torch.randn(5, 64)
    got = load(tmp_path / "mlp.export.json", format=fmt)(x)
    torch.testing.assert_close(got, model(x), atol=tolerance, rtol=tolerance)


LOAD_AND_COMPARE = """
import gc, sys, torch
from lightning_deploy import load
manifest, reference = sys.argv[1], torch.load(sys.argv[2])
for fmt in sys.argv[3:]:
    model = load(manifest, format=fmt)
    torch.testing.assert_close(model(reference["x"]), reference["y"], atol=2e-3, rtol=2e-3)
    print(fmt, "matches eager at batch", reference["x"].shape[0], flush=True)
    del model
    gc.collect()
"""


def _load_and_compare(manifest: Path, reference: Path) -> str:
    """Each format ``load()``ed in one fresh process (one at a time) and called at the reference's batch."""
    done = subprocess.run([sys.executable, "-c", LOAD_AND_COMPARE, str(manifest), str(reference), *FORMATS],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_an_8_gb_model_through_the_callback_and_from_its_sharded_directory(tmp_path):
    """30 x Linear(8192, 8192): 8.05 GB of float32 weights, a third of this machine's memory."""
    try:
        torch.manual_seed(0)
        model = BigMLP(layers=30)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        assert weights > 8e9
        callback = ModelExport(formats=FORMATS)
        trainer = pl.Trainer(max_steps=1, callbacks=[callback, ModelCheckpoint(dirpath=tmp_path / "fit")], logger=False,
                             enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(model)
        manifest = callback.manifest
        assert manifest["ok"], [(a["format"], a["error"]) for a in manifest["artifacts"]]
        onnx_entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
        (data_file,) = (tmp_path / "fit").glob("*.onnx.data")  # one data file beside the model, digest in the manifest
        assert data_file.name in onnx_entry["files"] and data_file.name in onnx_entry["side_files_sha256"]
        assert data_file.stat().st_size >= weights
        x = torch.randn(3, model.hparams.width)  # the export sample had 2 rows
        with torch.no_grad():
            torch.save({"x": x, "y": model(x)}, tmp_path / "reference.pt")
        (best,) = (tmp_path / "fit").glob("*.ckpt")
        del model, trainer, callback
        gc.collect()
        fit_manifest = next((tmp_path / "fit").glob("*.export.json"))
        assert _load_and_compare(fit_manifest, tmp_path / "reference.pt").count("matches eager") == 3
        for artifact in (tmp_path / "fit").glob(f"{best.stem}.*"):  # room on the disk for the second export
            if artifact != best:
                artifact.unlink()

        sharded = tmp_path / "fsdp" / best.name
        sharded.parent.mkdir()
        save_from_one_process(torch.load(best, mmap=True, weights_only=True), sharded)
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        done = subprocess.run([sys.executable, "-m", "lightning_deploy.cli", "export", "--ckpt_path", str(sharded),
                               "--model", "big_model.BigMLP", "--formats", json.dumps(FORMATS)],
                              capture_output=True, text=True, timeout=3600, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        sharded_manifest = sharded.parent / f"{best.stem}.export.json"
        assert json.loads(sharded_manifest.read_text())["ok"]
        assert _load_and_compare(sharded_manifest, tmp_path / "reference.pt").count("matches eager") == 3
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # up to 40 GB of files, also when it fails


@pytest.mark.slow
@pytest.mark.parametrize(("layers", "formats"), [(8, FORMATS), (30, ["onnx"])], ids=["2.15GB", "8.05GB"])
def test_a_big_model_is_served_written_for_triton_and_registered_in_mlflow(tmp_path, monkeypatch, layers, formats):
    """N x Linear(8192, 8192): its ONNX weights in a side file, which every deployment path must carry.

    At 8 GB only ONNX is written (the Triton entry and the MLflow model each copy its files: three
    copies on the disk); the server is given the time that loading 8 GB takes.
    """
    import mlflow
    import onnxruntime as ort
    import servers

    from lightning_deploy.serving.triton import write_model_repository
    from lightning_deploy.tracking.mlflow_model import log_registered_model

    monkeypatch.setattr(servers, "START_TIMEOUT_S", 600)
    try:
        torch.manual_seed(0)
        model = BigMLP(layers=layers).eval()
        manifest = export(model, model.example_input_array, tmp_path / "art", "big", formats=formats)
        assert manifest["ok"], [(a["format"], a["error"]) for a in manifest["artifacts"]]
        x = torch.randn(3, model.hparams.width)
        with torch.no_grad():
            expected = model(x).numpy()
        del model
        gc.collect()

        folder = write_model_repository(tmp_path / "art" / "big.export.json", tmp_path / "models")
        assert "big.onnx.data" in {p.name for p in (folder / "1").iterdir()}  # the side file travels with the graph
        session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(got, expected, atol=2e-3, rtol=2e-3)
        del session

        with running_server(serve_cli(tmp_path / "art" / "big.export.json"), tmp_path) as (_, url):
            answer = httpx.post(f"{url}/predict", json={"x": x.tolist()}, timeout=120)
        assert answer.status_code == 200, answer.text[:500]
        np.testing.assert_allclose(np.asarray(answer.json()), expected, atol=2e-3, rtol=2e-3)

        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment("big", artifact_location=str(tmp_path / "mlruns"))
        run = client.create_run(experiment)
        record = log_registered_model(client, run.info.run_id, tmp_path / "art", manifest, "big", "big-model")
        mlflow.set_tracking_uri(uri)
        predicted = mlflow.pyfunc.load_model(record["model_uri"]).predict({"x": x.numpy()})
        (value,) = predicted.values() if isinstance(predicted, dict) else (predicted,)
        np.testing.assert_allclose(np.asarray(value), expected, atol=2e-3, rtol=2e-3)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # at 8 GB, 24 GB of files: also when it fails
