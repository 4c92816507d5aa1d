"""The export logged to MLflow and W&B runs, registered in MLflow, and a tracker that fails.

A real ``mlflow server`` (SQLite backend store, local artifact root) on a free port of
127.0.0.1, a real ``Trainer.fit`` with ``MLFlowLogger`` or an offline ``WandbLogger``, and the
registered model run in a fresh process without the training code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning_models import DictDigits, digits_loaders
from servers import free_port

import lightning_deploy as ld
from lightning_deploy import ModelExport
from lightning_deploy.errors import ConfigurationError

mlflow = pytest.importorskip("mlflow")

FORMATS = ["onnx", "torchscript"]


class MlflowServer:
    """``mlflow server`` in its own process group; ``stop()`` and ``start()`` keep its store and port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, "mlflow server: no /health in 180 s"
            time.sleep(0.5)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def quick_mlflow_client(monkeypatch):
    """No retries with back-off (MLflow's default waits minutes for a server that is down)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _sample(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, 64), torch.ones(batch, 64)


def _fit(tmp_path: Path, logger, export: ModelExport, callbacks=()) -> pl.Trainer:
    pl.seed_everything(0)
    train, val = digits_loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, logger=logger, enable_progress_bar=False, accelerator="cpu",
        callbacks=[checkpoint, *callbacks[:1], export, *callbacks[1:]], enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(DictDigits(), train, val)
    return trainer


def _eager(ckpt: str, pixels: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    model = DictDigits.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(torch.from_numpy(pixels), torch.from_numpy(mask)).items()}


def _unseen_digits(rows: int = 7) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    pixels = (x[-rows:] / 16.0).astype(np.float32)
    mask = np.ones_like(pixels)
    mask[:, ::7] = 0.0  # not the all-ones mask of the export sample
    return pixels, mask


_PREDICT = """
import json, sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
inputs = dict(np.load(sys.argv[3]))
outputs = model.predict(inputs)
np.savez(sys.argv[4], **outputs)
import lightning_deploy
print(json.dumps({"code": lightning_deploy.__file__, "training_code": "lightning_models" in sys.modules}))
"""


def test_fit_logs_the_export_to_the_mlflow_run_and_registers_a_model_that_runs_in_a_fresh_process(
    tmp_path, mlflow_server, quick_mlflow_client
):
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name="digits", tracking_uri=mlflow_server.url)
    export = ModelExport(formats=FORMATS, input_sample=_sample(), check_batches=0, register_model="digits-dict")
    trainer = _fit(tmp_path, logger, export)
    ckpt = trainer.checkpoint_callback.best_model_path
    stem, folder = Path(ckpt).stem, Path(ckpt).parent

    client = mlflow.MlflowClient(mlflow_server.url)
    listed = {Path(f.path).name for f in client.list_artifacts(logger.run_id, f"lightning-deploy/{stem}")}
    assert listed == {f"{stem}.onnx", f"{stem}.torchscript.pt", f"{stem}.export.json", f"{stem}.samples.npz"}
    metrics = client.get_run(logger.run_id).data.metrics
    assert metrics["export/onnx_ok"] == 1.0 and metrics["export/torchscript_ok"] == 1.0
    assert metrics["export/onnx_max_abs_diff"] < 1e-4 and metrics["export/onnx_ms_per_call"] > 0
    # the model's own validation metric per artifact (validate=True), beside eager's
    assert metrics["export/onnx_val_loss"] == pytest.approx(metrics["export/eager_val_loss"], abs=1e-4)
    assert metrics["export/torchscript_val_loss"] == pytest.approx(metrics["export/eager_val_loss"], abs=1e-4)

    version = client.get_model_version("digits-dict", "1")
    assert version.run_id == logger.run_id
    manifest = json.loads((folder / f"{stem}.export.json").read_text())
    [record] = manifest["tracking"]
    assert record["error"] is None and record["run_id"] == logger.run_id
    assert (
        record["registered_model"]["version"] == "1"
        and record["registered_model"]["model_uri"] == "models:/digits-dict/1"
    )
    assert set(record["files"]) == {f"{stem}.torchscript.pt", f"{stem}.onnx", f"{stem}.samples.npz"}
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/digits-dict/1")).read_text()
    assert f"onnxruntime=={manifest['versions']['onnxruntime']}" in requirements.split()

    pixels, mask = _unseen_digits()
    np.savez(tmp_path / "inputs.npz", pixels=pixels, mask=mask)
    fresh = tmp_path / "fresh"  # no tests/ on the path: the training code is not importable there
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT, mlflow_server.url, "models:/digits-dict/1", tmp_path / "inputs.npz",
         tmp_path / "outputs.npz"], cwd=fresh, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    where = json.loads(done.stdout.strip().splitlines()[-1])
    assert not where["training_code"] and "/code/lightning_deploy/" in where["code"]  # the model's own copy
    got, expected = dict(np.load(tmp_path / "outputs.npz")), _eager(ckpt, pixels, mask)
    assert list(got) == manifest["outputs"]["names"] == ["out.logits", "out.probs"]  # the leaves by name
    for name in expected:
        assert got[f"out.{name}"].shape == (7, 10)
        np.testing.assert_allclose(got[f"out.{name}"], expected[name], atol=1e-4, rtol=1e-4)


class _Outage(Callback):
    """Stops the tracking server as fit ends, before ModelExport's hook; ``restore`` starts it after ModelExport's.

    The restart is for Lightning's own ``MLFlowLogger.finalize``, which reads the run after every
    callback: it would fail with the server down whatever the export did.
    """

    def __init__(self, server: MlflowServer, restore: bool) -> None:
        self.server, self.restore = server, restore

    def on_fit_end(self, trainer, pl_module):
        if self.restore:
            self.server.start()
        else:
            self.server.stop()


def test_a_tracking_server_that_goes_down_leaves_fit_and_the_local_artifacts_intact(
    tmp_path, mlflow_server, quick_mlflow_client
):
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name="outage", tracking_uri=mlflow_server.url)
    export = ModelExport(formats=FORMATS, input_sample=_sample(), check_batches=0, register_model="digits-outage")
    with pytest.warns(UserWarning, match=r"logging the export to mlflow failed .*artifacts and the manifest .* intact"):
        trainer = _fit(
            tmp_path, logger, export, callbacks=(_Outage(mlflow_server, False), _Outage(mlflow_server, True))
        )

    ckpt = Path(trainer.checkpoint_callback.best_model_path)
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["state_dict"]
    manifest = json.loads((ckpt.parent / f"{ckpt.stem}.export.json").read_text())
    assert manifest["ok"]
    [record] = manifest["tracking"]
    assert record["tracker"] == "mlflow" and "Connection refused" in record["error"]
    pixels, mask = _unseen_digits()
    for fmt in FORMATS:
        outputs = ld.load(ckpt.parent / f"{ckpt.stem}.export.json", format=fmt)(pixels, mask)
        np.testing.assert_allclose(np.asarray(outputs["logits"]), _eager(str(ckpt), pixels, mask)["logits"], atol=1e-4)
    client = mlflow.MlflowClient(mlflow_server.url)
    assert client.list_artifacts(logger.run_id, "lightning-deploy") == []
    assert client.search_model_versions("name='digits-outage'") == []


def _wandb_records(run_file: Path) -> list:
    """The records of a W&B run's transaction log (``run-ID.wandb``).

    wandb 0.31 reads this file only in its Go core, with no Python reader left, so the test
    reads the log's frames itself: a 7-byte header, then 32 KiB blocks of chunks, each
    ``crc32 (4) | length (2, little-endian) | kind (1: full, 2: first, 3: middle, 4: last)``.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, pos, parts, records = run_file.read_bytes(), 32768, 7, [], []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            break  # a chunk still being written
        if kind == 0:
            pos += block - pos % block
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def test_an_offline_wandb_run_holds_the_model_artifact_with_the_files_and_the_manifest(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    for variable in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="digits", offline=True, save_dir=str(tmp_path))
    trainer = _fit(tmp_path, logger, ModelExport(formats=FORMATS, input_sample=_sample(), check_batches=0))
    logger.experiment.finish()
    ckpt = Path(trainer.checkpoint_callback.best_model_path)
    manifest = json.loads((ckpt.parent / f"{ckpt.stem}.export.json").read_text())
    [record] = manifest["tracking"]
    assert record["tracker"] == "wandb" and record["error"] is None

    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = _complete_log(run_file)
    [artifact] = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "model" and artifact.name == record["artifact"] == ckpt.stem.replace("=", "-")
    metadata = json.loads(artifact.metadata)
    assert metadata["artifacts"] == manifest["artifacts"] and metadata["ok"] is True
    contents = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    stem = ckpt.stem
    assert set(contents) == {f"{stem}.onnx", f"{stem}.torchscript.pt", f"{stem}.export.json", f"{stem}.samples.npz"}
    for name, staged in contents.items():  # the staged copies that `wandb sync` uploads
        if name.endswith(".export.json"):
            continue  # the local manifest has gained its tracking record since
        assert _sha256(staged) == _sha256(ckpt.parent / name)


def _complete_log(run_file: Path, timeout: float = 120) -> list:
    """The run's records once its ``exit`` record is written: W&B's service process writes the log
    after ``finish()`` returns (seen under load: the artifact record not yet there)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"no exit record in {run_file} after {timeout} s"
        time.sleep(0.2)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_model_is_checked_before_training(tmp_path, monkeypatch):
    with pytest.raises(ConfigurationError, match=r"register_model=''.*model name"):
        ModelExport(register_model="")
    with pytest.raises(ConfigurationError, match=r"register_model='a/b'"):
        ModelExport(register_model="a/b")
    with pytest.raises(ConfigurationError, match=r"log_artifacts='yes'.*True or False"):
        ModelExport(log_artifacts="yes")
    model = DictDigits()
    export = ModelExport(input_sample=_sample(), check_batches=0, register_model="digits")
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, accelerator="cpu",
                         callbacks=[ModelCheckpoint(monitor="val_loss"), export])  # fmt: skip
    train, val = digits_loaders()
    with pytest.raises(ConfigurationError, match=r"register_model='digits'.*MLFlowLogger.*HINT"):
        trainer.fit(model, train, val)
    assert model.training_batches == 0
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python itself marks a module as not importable
    with pytest.raises(ConfigurationError, match=r"needs the mlflow package.*pip install 'lightning-deploy\[mlflow\]'"):
        ModelExport(register_model="digits")


def _deploy(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    command = [sys.executable, "-m", "lightning_deploy.cli", "export", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run's checkpoint (no tracker): what ``lightning-deploy export`` is for."""
    root = tmp_path_factory.mktemp("finished")
    pl.seed_everything(0)
    trainer = pl.Trainer(default_root_dir=root, max_epochs=1, logger=False, enable_progress_bar=False,
                         accelerator="cpu", callbacks=[ModelCheckpoint(dirpath=root / "ckpt")])  # fmt: skip
    trainer.fit(DictDigits(), *digits_loaders())
    return Path(trainer.checkpoint_callback.best_model_path)


def test_the_command_line_logs_a_finished_run_to_a_new_mlflow_run_and_registers_a_servable_model(
    tmp_path, mlflow_server, finished_run
):
    spec = '{"pixels": {"shape": [4, 64]}, "mask": {"shape": [4, 64]}}'
    done = _deploy("--ckpt_path", str(finished_run), "--model", "lightning_models.DictDigits", "--formats", "[onnx]",
                   "--input_spec", spec, "--check_batches", "0", "--mlflow_tracking_uri", mlflow_server.url,
                   "--mlflow_experiment", "finished-runs", "--register_model", "digits-cli", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(finished_run.with_suffix(".export.json").read_text())
    [record] = manifest["tracking"]
    assert record["error"] is None and record["registered_model"]["model_uri"] == "models:/digits-cli/1"
    manifest_file = str(finished_run.with_suffix(".export.json"))
    show = subprocess.run([sys.executable, "-m", "lightning_deploy.cli", "show", manifest_file],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert f"mlflow: run {record['run_id']}" in show.stdout and "registered models:/digits-cli/1 (onnx)" in show.stdout

    client = mlflow.MlflowClient(mlflow_server.url)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["export/onnx_ok"] == 1.0
    assert client.get_experiment(run.info.experiment_id).name == "finished-runs"
    listed = {
        Path(f.path).name for f in client.list_artifacts(run.info.run_id, f"lightning-deploy/{finished_run.stem}")
    }
    assert listed == {f"{finished_run.stem}.{suffix}" for suffix in ("onnx", "export.json", "samples.npz")}

    mlflow.set_tracking_uri(mlflow_server.url)
    pixels, mask = _unseen_digits(5)
    got = mlflow.pyfunc.load_model("models:/digits-cli/1").predict({"pixels": pixels, "mask": mask})
    expected = _eager(str(finished_run), pixels, mask)
    np.testing.assert_allclose(got["out.logits"], expected["logits"], atol=1e-4)

    port = free_port()  # and served by MLflow's own server, in this environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits-cli/1", "--env-manager",
               "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"http://127.0.0.1:{port}/ping"):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        body = {"inputs": {"pixels": pixels.tolist(), "mask": mask.tolist()}}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        served = answer.json()["predictions"]
        np.testing.assert_allclose(np.array(served["out.probs"]), expected["probs"], atol=1e-5)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            ["--register_model", "m"],
            r"--register_model m: MLflow registers a model from a run\. HINT: add --mlflow_run_id",
        ),
        (["--mlflow_run_id", "abc", "--mlflow_experiment", "e"], r"give one"),
    ],
)
def test_the_command_line_refuses_mlflow_options_it_cannot_carry_out_before_exporting(
    tmp_path, finished_run, options, match
):
    done = _deploy("--ckpt_path", str(finished_run), "--model", "lightning_models.DictDigits", *options, cwd=tmp_path)
    assert done.returncode == 2
    assert re.search(match, done.stderr), done.stderr


_LOAD = """
import sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print("loaded", model.metadata.get_input_schema().input_names())
"""


def test_the_registered_model_runs_its_golden_check_when_mlflow_loads_it(tmp_path, mlflow_server, quick_mlflow_client):
    from models import StructuredModel, structured_sample
    from tampering import change_golden_output

    from lightning_deploy import export
    from lightning_deploy.tracking.mlflow_model import log_registered_model

    folder = tmp_path / "export"
    export(StructuredModel(), structured_sample(3), folder, "model", formats=["onnx"])
    source = change_golden_output(folder, "model", "out.stats.summary.mean", update_sha=True)
    client = mlflow.MlflowClient(mlflow_server.url)
    run = client.create_run(client.create_experiment("golden"))
    manifest = json.loads((folder / "model.export.json").read_text())
    log_registered_model(client, run.info.run_id, folder, manifest, "model", "tampered")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no model code, no tests/ helpers
    command = [sys.executable, "-c", _LOAD, mlflow_server.url, "models:/tampered/1"]
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "VerificationError" in refused.stderr
    assert "does not reproduce its golden samples" in refused.stderr and f"at the {source}" in refused.stderr
    assert "output 'out.stats.summary.mean'" in refused.stderr and "LIGHTNING_DEPLOY_NO_VERIFY=1" in refused.stderr
    skipped = subprocess.run(command, cwd=tmp_path, env={**env, "LIGHTNING_DEPLOY_NO_VERIFY": "1"},
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "loaded ['batch.x', 'batch.mask']" in skipped.stdout
