"""The command line, every command run as a real subprocess."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_deploy import ModelExport, load

ROOT = Path(__file__).parents[1]
CLI_EXAMPLE = ROOT / "examples" / "lightning_cli"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "examples")])}


def _run(args, cwd, timeout=300):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def _deploy(*args, cwd):
    return _run([sys.executable, "-m", "lightning_deploy.cli", *args], cwd)


@pytest.fixture(scope="module")
def lightning_cli_run(tmp_path_factory):
    """`train.py fit --config config.yaml`, then `train.py export` on a copy of the best checkpoint."""
    cwd = tmp_path_factory.mktemp("lightning_cli")
    train, config = str(CLI_EXAMPLE / "train.py"), str(CLI_EXAMPLE / "config.yaml")
    fit = _run([sys.executable, train, "fit", "--config", config, "--trainer.max_epochs=2"], cwd)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoints = cwd / "artifacts" / "lightning_cli" / "checkpoints"
    (best,) = checkpoints.glob("*.ckpt")
    again = cwd / "again"
    again.mkdir()
    shutil.copy(best, again / best.name)
    export = _run([sys.executable, train, "export", "--config", config, "--ckpt_path", str(again / best.name)], cwd)
    assert export.returncode == 0, export.stderr[-3000:]
    return best, again / best.name


def test_lightning_cli_fit_leaves_verified_artifacts_next_to_the_best_checkpoint(lightning_cli_run):
    best, _ = lightning_cli_run
    manifest = json.loads(best.with_suffix(".export.json").read_text())
    assert manifest["ok"] and manifest["checkpoint"] == best.name
    assert {a["format"] for a in manifest["artifacts"]} == {"torchscript", "onnx"}
    assert all((best.parent / a["path"]).is_file() for a in manifest["artifacts"])
    for artifact in manifest["artifacts"]:  # check_batches=2 by default: the datamodule's validation batches
        assert [c["source"] for c in artifact["checks"]][-2:] == ["validation batch 0", "validation batch 1"]


def test_export_subcommand_writes_the_same_files_with_equal_outputs(lightning_cli_run):
    best, copy = lightning_cli_run
    suffixes = lambda folder, stem: sorted(p.name[len(stem) :] for p in folder.iterdir() if p.name.startswith(stem))  # noqa: E731
    assert suffixes(copy.parent, copy.stem) == suffixes(best.parent, best.stem)
    manifest = json.loads(copy.with_suffix(".export.json").read_text())
    assert manifest["ok"] and all(a["ok"] for a in manifest["artifacts"])
    for artifact in manifest["artifacts"]:  # the YAML's datamodule, passed to the export subcommand
        assert [c["source"] for c in artifact["checks"]][-2:] == ["validation batch 0", "validation batch 1"]
    # validate=True by default: the model's own metrics, on that datamodule, the same as at fit end
    fitted = json.loads(best.with_suffix(".export.json").read_text())["metrics"]
    assert set(manifest["metrics"]) == set(fitted) == {"val_loss", "val_acc"}
    for name, values in manifest["metrics"].items():
        assert set(values) == {"eager", "torchscript", "onnx"}
        assert values["eager"] == pytest.approx(fitted[name]["eager"], abs=1e-6)
        assert values["onnx"] == pytest.approx(values["eager"], abs=1e-4)
    pixels = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    for suffix in (".onnx", ".torchscript.pt"):
        by_callback = load(best.parent / (best.stem + suffix))(pixels)
        by_command = load(copy.parent / (copy.stem + suffix))(pixels)
        np.testing.assert_array_equal(by_command, by_callback)


def test_command_line_overrides_the_yaml(lightning_cli_run, tmp_path):
    best, _ = lightning_cli_run
    shutil.copy(best, tmp_path / best.name)
    train, config = str(CLI_EXAMPLE / "train.py"), str(CLI_EXAMPLE / "config.yaml")
    override = "--trainer.callbacks.formats=[pt2]"  # jsonargparse applies it to the last callback: ModelExport
    result = _run([sys.executable, train, "export", "--config", config, "--ckpt_path", str(tmp_path / best.name),
                   override], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".ckpt", ".json", ".npz", ".pt2"]


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A checkpoint made by a plain Trainer script (not LightningCLI)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from train_digits import DigitsMLP, loaders

    root = tmp_path_factory.mktemp("plain")
    pl.seed_everything(0)
    trainer = pl.Trainer(default_root_dir=root, max_epochs=1, logger=False, enable_progress_bar=False,
                         callbacks=[ModelCheckpoint(dirpath=root)])  # fmt: skip
    trainer.fit(DigitsMLP(), *loaders())
    (ckpt,) = root.glob("*.ckpt")
    return ckpt


def test_export_show_and_run_on_a_plain_trainer_checkpoint(plain_checkpoint, tmp_path):
    from train_digits import DigitsMLP

    ckpt = plain_checkpoint
    result = _deploy("export", "--ckpt_path", str(ckpt), "--model", "train_digits.DigitsMLP",
                     "--formats", "[onnx, torchscript, pt2]", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads(ckpt.with_suffix(".export.json").read_text())
    assert manifest["ok"] and [a["format"] for a in manifest["artifacts"]] == ["onnx", "torchscript", "pt2"]

    show = _deploy("show", str(ckpt.with_suffix(".export.json")), cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    for artifact in manifest["artifacts"]:
        assert artifact["sha256"][:12] in show.stdout and artifact["method"] in show.stdout

    pixels = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    eager = DigitsMLP.load_from_checkpoint(ckpt, map_location="cpu").eval()(torch.from_numpy(pixels)).detach().numpy()
    printed = _deploy("run", str(ckpt.with_suffix(".onnx")), "--input", str(tmp_path / "pixels.npy"), cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "out  shape=[3, 10] dtype=float32" in printed.stdout
    assert f"{eager[0, 0]:.5f}" in printed.stdout
    saved = _deploy("run", str(ckpt.with_suffix(".pt2")), "--input", str(tmp_path / "pixels.npy"),
                    "--output", str(tmp_path / "out.npz"), "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["out"], eager, atol=1e-5)
    if not torch.cuda.is_available():
        refused = _deploy("run", str(ckpt.with_suffix(".onnx")), "--input", str(tmp_path / "pixels.npy"),
                          "--device", "cuda", cwd=tmp_path)  # fmt: skip
        assert refused.returncode != 0 and "load(device='cuda')" in refused.stderr
        assert "onnxruntime-gpu" in refused.stderr


def _bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  callbacks:\n    - class_path: lightning_deploy.ModelExport\n   init_args: [\n")
    return path


def _typo_yaml(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("trainer:\n  callbacks:\n    - class_path: lightning_deploy.ModelExport\n"
                    "      init_args:\n        formts: [onnx]\n")  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda c, t: ["--ckpt_path", str(t / "missing.ckpt")], r"no such file or directory\. HINT: pass a \.ckpt"),
        (
            lambda c, t: ["--ckpt_path", str(t / "garbage.ckpt"), "--model", "train_digits.DigitsMLP"],
            r"cannot read it as a checkpoint",
        ),
        (
            lambda c, t: ["--ckpt_path", str(c), "--model", "lightning_models.DictDigits"],
            r"does not match the checkpoint's weights .* HINT: pass the class that trained",
        ),
        (lambda c, t: ["--ckpt_path", str(c)], r"does not record its LightningModule class\. HINT: pass --model"),
        (lambda c, t: ["--ckpt_path", str(c), "--model", "nowhere.Model"], r"cannot import it\. HINT"),
        (lambda c, t: ["--ckpt_path", str(c), "--formats", "[tflite]"], r"formats.*tflite HINT: see 'lightning-deploy"),
        (lambda c, t: ["--ckpt_path", str(c), "--config", str(_bad_yaml(t))], r"not valid YAML .* HINT"),
        (
            lambda c, t: ["--ckpt_path", str(c), "--config", str(_typo_yaml(t))],
            r"unknown key\(s\) 'formts' \(did you mean 'formats'\?\)\. HINT: valid keys",
        ),
        (
            lambda c, t: ["--ckpt_path", str(c), "--model", "train_digits.DigitsMLP", "--atol", "-1"],
            r"ModelExport\(atol=-1.0\).*HINT",
        ),
    ],
)
def test_failures_exit_non_zero_with_one_line_naming_the_fix(plain_checkpoint, tmp_path, args, message):
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint")
    result = _deploy("export", *args(plain_checkpoint, tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-deploy: error: "), result.stderr
    assert "Traceback" not in result.stderr
    import re

    assert re.search(message, lines[0]), lines[0]


def test_lightning_cli_rejects_a_yaml_typo_before_training(tmp_path):
    config = (CLI_EXAMPLE / "config.yaml").read_text().replace("formats:", "formts:")
    (tmp_path / "typo.yaml").write_text(config)
    result = _run([sys.executable, str(CLI_EXAMPLE / "train.py"), "fit", "--config", str(tmp_path / "typo.yaml")],
                  tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "formts" in result.stderr
    assert not (tmp_path / "artifacts").exists()  # nothing trained, nothing written


def test_export_help_lists_every_option_with_its_help():
    result = _deploy("export", "--help", cwd=ROOT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in inspect.signature(ModelExport).parameters:
        if name == "input_sample":  # Python objects only; input_spec is its command-line form
            continue
        assert f"--{name} " in text, name
    for phrase in (
        "dotted path of the ``nn.Module`` to export",
        "dry-run the export of the untrained model",
        "tolerance relative to each output leaf's largest magnitude",
        "class path of the LightningModule",
    ):
        assert phrase in text  # fmt: skip


def test_help_show_and_run_of_onnx_import_neither_torch_nor_lightning(tmp_path):
    """What makes them answer at once (benchmarks/cli_speed.py times it): Python's own import log, per command."""
    from lightning_deploy import export

    export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path, "linear", formats=["onnx"])
    np.savez(tmp_path / "x.npz", input=np.ones((3, 4), np.float32))  # nn.Linear.forward(input)
    commands = [
        ["--help"],
        ["serve", "--help"],
        ["triton", "--help"],
        ["show", str(tmp_path / "linear.export.json")],
        ["run", str(tmp_path / "linear.onnx"), "--input", str(tmp_path / "x.npz")],
    ]
    for command in commands:
        result = _run([sys.executable, "-X", "importtime", "-m", "lightning_deploy.cli", *command], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "import time:" in line}
        assert "lightning_deploy" in imported, "the import log was read"
        heavy = imported & {"torch", "lightning", "jsonargparse", "lightning_deploy.lightning.callback"}
        assert not heavy, f"{command}: imports {heavy}"
    assert "out  shape=[3, 2]" in result.stdout


def test_export_help_imports_neither_torch_nor_lightning(tmp_path):
    """As the console script runs it (``lightning_deploy.cli`` imported, not ``__main__``): jsonargparse names the
    options' import path through the package, which once imported the callback, Lightning and torch (7 s)."""
    console_script = "import sys; from lightning_deploy.cli import main; sys.exit(main())"
    result = _run([sys.executable, "-X", "importtime", "-c", console_script, "export", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--check_batches" in result.stdout and "--ckpt_path" in result.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "import time:" in line}
    assert "jsonargparse" in imported, "the import log was read"
    heavy = imported & {"torch", "lightning", "onnxruntime", "lightning_deploy.lightning.callback"}
    assert not heavy, f"export --help imports {heavy}"
