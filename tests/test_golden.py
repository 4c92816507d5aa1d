"""Golden samples shipped with the artifacts, and `lightning-deploy verify` re-running them where the artifacts go.

Every verify here runs as a real subprocess; the deployment-side ones in a process where torch and
Lightning cannot be imported, on a copy of the artifact folder alone (no model code beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from models import StructuredModel, structured_sample
from tampering import change_golden_output

from lightning_deploy import export, load
from lightning_deploy.runtime.host import describe_host

ROOT = Path(__file__).parents[1]
# torch and Lightning unimportable, as on a machine with the deployment-side install only
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None\n"


def _verify_cli(folder: Path, *args: str, torch_free: bool = True) -> subprocess.CompletedProcess:
    code = (NO_TORCH if torch_free else "") + (
        "from lightning_deploy.cli import main\n"
        f"raise SystemExit(main(['verify', {str(folder / 'model.export.json')!r}, *{list(args)!r}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the model's code is not importable
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=folder,
                          env={**env, "COLUMNS": "200"})  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """StructuredModel (dict in, dataclass out) to ONNX and TorchScript, with a data check; the folder copied alone."""
    made = tmp_path_factory.mktemp("made")
    data = {"validation batch 0": structured_sample(5)}
    manifest = export(StructuredModel(), structured_sample(3), made, "model", formats=["onnx", "torchscript"],
                      check_samples=data)  # fmt: skip
    assert manifest["ok"]
    return made, manifest


def _copy(made: Path, tmp_path: Path) -> Path:
    target = tmp_path / "deployed"
    shutil.copytree(made, target)
    return target


def test_the_samples_hold_every_check_by_leaf_name_readable_with_numpy_alone(exported):
    made, manifest = exported
    samples = manifest["samples"]
    path = made / samples["path"]
    assert samples["path"] == "model.samples.npz"
    assert samples["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert samples["dropped"] == []
    sources = [check["source"] for check in manifest["artifacts"][0]["checks"]]
    assert [c["source"] for c in samples["checks"]] == sources  # every check the artifacts passed, in order
    with zipfile.ZipFile(path) as archive:  # plain .npy members, no pickles
        assert all(name.endswith(".npy") for name in archive.namelist())
    model = StructuredModel().eval()
    with np.load(path, allow_pickle=False) as stored:
        for record in samples["checks"]:
            key = record["key"]
            assert record["inputs"] == manifest["inputs"]["names"] == ["batch.x", "batch.mask"]
            assert "out.stats.summary.mean" in record["outputs"] and "out.parts.1.first" in record["outputs"]
            batch = {"x": torch.from_numpy(stored[f"{key}/in/batch.x"]),
                     "mask": torch.from_numpy(stored[f"{key}/in/batch.mask"])}  # fmt: skip
            with torch.no_grad():
                eager = model(batch)
            np.testing.assert_allclose(stored[f"{key}/out/out.logits"], eager.logits.numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(stored[f"{key}/out/out.parts.1.second"], eager.parts[1].second.numpy(),
                                       rtol=1e-6, atol=1e-6)  # fmt: skip
    batches = [stored_shape[0] for stored_shape in (c["shapes"][0] for c in manifest["artifacts"][0]["checks"])]
    assert len(set(batches)) >= 3, batches  # the checks differ in size (3, grown, smaller, the data's 5)


def test_verify_reproduces_onnx_without_torch_and_records_this_host(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    before = json.loads((folder / "model.export.json").read_text())
    result = _verify_cli(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproduced" in result.stdout and "cannot run here" in result.stdout  # torchscript needs torch
    after = json.loads((folder / "model.export.json").read_text())
    assert {k: v for k, v in after.items() if k != "verified_on"} == before  # the export's own record untouched
    (record,) = after["verified_on"]
    assert record["host"]["cpu"] == describe_host()["cpu"] and record["fingerprint"] == describe_host()["fingerprint"]
    assert record["host"]["versions"]["onnxruntime"] == describe_host()["versions"]["onnxruntime"]
    rows = {row["format"]: row for row in record["artifacts"]}
    onnx = rows["onnx"]
    assert onnx["status"] == "reproduced" and onnx["ok"] and onnx["checks_passed"] == len(onnx["checks"]) == 4
    assert 0 <= onnx["max_abs_diff"] <= 1e-4 and onnx["ms_per_call"] > 0
    assert rows["torchscript"]["status"] == "cannot run here" and "torch" in rows["torchscript"]["error"]
    # a second run on the same host replaces its record instead of adding one
    assert _verify_cli(folder).returncode == 0
    assert len(json.loads((folder / "model.export.json").read_text())["verified_on"]) == 1


def test_a_changed_golden_output_fails_verify_naming_the_check_and_the_leaf(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    change_golden_output(folder, "model", "out.stats.summary.max", update_sha=True)
    result = _verify_cli(folder, "--format", "onnx")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED onnx" in result.stderr and "validation batch 0" in result.stderr
    assert "output 'out.stats.summary.max'" in result.stderr and "max abs diff 0.5" in result.stderr
    record = json.loads((folder / "model.export.json").read_text())["verified_on"][0]
    assert record["ok"] is False and record["artifacts"][0]["status"] == "differs"


def test_samples_changed_behind_the_manifests_back_fail_on_their_sha256(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    change_golden_output(folder, "model", "out.logits", update_sha=False)
    result = _verify_cli(folder)
    assert result.returncode == 1 and "sha256 mismatch" in result.stderr and "golden samples" in result.stderr


def test_verify_asked_for_a_format_it_cannot_run_or_the_manifest_lacks(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    cannot = _verify_cli(folder, "--format", "torchscript")
    assert cannot.returncode == 1 and "FAILED torchscript" in cannot.stderr and "needs torch" in cannot.stderr
    unknown = _verify_cli(folder, "--format", "pt2")
    assert unknown.returncode == 2 and "lists no ['pt2'] artifact" in unknown.stderr


def test_load_ranks_by_this_hosts_timings_where_verify_ran_here(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    assert _verify_cli(folder, torch_free=False).returncode == 0  # both formats run and are timed here
    manifest_file = folder / "model.export.json"
    manifest = json.loads(manifest_file.read_text())
    here = {row["format"]: row["ms_per_call"] for row in manifest["verified_on"][0]["artifacts"]}
    fastest_here = min(here, key=here.get)
    other = next(f for f in here if f != fastest_here)
    # the export machine ranked them the other way round (another CPU): this host's timings decide here
    for entry in manifest["artifacts"]:
        entry["ms_per_call"] = 1.0 if entry["format"] == other else 9.0
    manifest_file.write_text(json.dumps(manifest))
    assert load(manifest_file).format == fastest_here
    # a record of another host leaves the export's ranking in force
    manifest["verified_on"][0]["fingerprint"] = "another-host"
    manifest_file.write_text(json.dumps(manifest))
    assert load(manifest_file).format == other


def test_the_size_cap_drops_the_largest_checks_first_and_says_so(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh())
    data = {"big batch": (torch.randn(512, 256),)}  # 1 MiB of inputs and as much of outputs
    manifest = export(model, torch.randn(4, 256), tmp_path, "model", formats=["onnx"], check_samples=data,
                      golden_samples_max_mb=0.5)  # fmt: skip
    samples = manifest["samples"]
    assert samples["max_mb"] == 0.5 and (tmp_path / "model.samples.npz").stat().st_size <= 0.5 * 2**20
    assert [d["source"] for d in samples["dropped"]] == ["big batch"]
    assert samples["dropped"][0]["bytes"] == 2 * 512 * 256 * 4
    assert "over the cap of 0.5 MB" in samples["dropped"][0]["reason"]
    assert samples["checks"][0]["source"] == "export sample"
    assert _verify_cli(tmp_path).returncode == 0


def test_without_golden_samples_verify_says_how_to_get_them(tmp_path):
    manifest = export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path, "model", formats=["onnx"],
                      golden_samples=False)  # fmt: skip
    assert manifest["samples"] is None and not (tmp_path / "model.samples.npz").exists()
    result = _verify_cli(tmp_path)
    assert result.returncode == 2 and "no golden samples" in result.stderr and "golden_samples=True" in result.stderr


def test_a_bad_cap_is_refused_before_any_file_is_written(tmp_path):
    from lightning_deploy import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"golden_samples_max_mb=0\).*> 0"):
        export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path / "out", "model", golden_samples_max_mb=0)
    assert not (tmp_path / "out").exists()


def test_each_artifact_is_timed_against_eager_and_a_derived_one_against_its_source(tmp_path):
    from lightning_deploy.verification.timing import SLOWER

    # int8 of one small Linear: quantising the input at each call costs more than int8 arithmetic saves
    # (measured here: 0.87x its float ONNX at batch 2) - the case a user must be told about
    manifest = export(torch.nn.Linear(8, 8), torch.randn(2, 8), tmp_path, "model", formats=["onnx", "onnx-int8"])
    onnx, int8 = manifest["artifacts"]
    # the figures are recorded to 1e-4 ms, and these calls take a few thousandths of a millisecond: ratios of
    # the recorded figures agree with the recorded ratios to a few percent
    for entry in (onnx, int8):
        speed = entry["speed"]
        assert speed["eager_ms_per_call"] > 0 and speed["vs_eager"] == pytest.approx(
            speed["eager_ms_per_call"] / entry["ms_per_call"], rel=4e-2
        )
    assert "source" not in onnx["speed"]
    speed = int8["speed"]
    assert speed["source"] == "onnx" and speed["source_ms_per_call"] == pytest.approx(onnx["ms_per_call"], abs=1e-3)
    assert speed["vs_source"] == pytest.approx(onnx["ms_per_call"] / int8["ms_per_call"], rel=4e-2)
    assert speed["slower_than_source"] == (speed["vs_source"] < SLOWER)
    show = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "model.export.json")]
    shown = subprocess.run(show, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert f"{speed['vs_source']:.2f}x onnx" + (", slower" if speed["slower_than_source"] else "") in shown.stdout
    # verify on this host measures the same pair again, side by side, and says the same thing its own way
    result = _verify_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "model.export.json").read_text())["verified_on"][0]["artifacts"][1]
    assert row["format"] == "onnx-int8" and row["speed"]["source"] == "onnx"
    assert row["speed"]["slower_than_source"] == (row["speed"]["vs_source"] < SLOWER)


def test_an_int8_export_alone_is_timed_against_the_float_file_it_was_made_from(tmp_path):
    manifest = export(torch.nn.Linear(8, 8), torch.randn(2, 8), tmp_path, "model", formats=["onnx-int8"])
    speed = manifest["artifacts"][0]["speed"]
    assert speed["source"] == "onnx" and speed["source_ms_per_call"] > 0 and not (tmp_path / "model.onnx").exists()


class WithoutPostprocessing(torch.nn.Module):
    """A model exported without its host-side step, saying so as the engine reads it (PanopticFPN's wrapper does)."""

    substitution = {  # noqa: RUF012 - read-only, as a class attribute is read
        "exported": "the network without its thresholding",
        "dropped": ["labels"],
        "host_step": "labels = scores > 0.5",
        "why": "the threshold is the application's choice",
    }

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict:
        return {"scores": torch.sigmoid(self.net(x))}


def test_what_was_exported_instead_of_forward_is_in_the_manifest_and_shown(tmp_path):
    manifest = export(WithoutPostprocessing(), torch.randn(2, 4), tmp_path, "model", formats=["onnx"])
    assert manifest["substitution"] == WithoutPostprocessing.substitution
    assert export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path, "plain", formats=["onnx"])["substitution"] is None
    show = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "model.export.json")]
    shown = subprocess.run(show, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert "exported instead of forward: the network without its thresholding; load() returns no labels" in shown.stdout
    assert "On the host: labels = scores > 0.5" in shown.stdout


@pytest.mark.slow
def test_a_vit_b_16_exports_samples_stay_under_the_cap_and_verify(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.vit_b_16(weights=None).eval()
    manifest = export(model, torch.rand(2, 3, 224, 224), tmp_path, "model", formats=["onnx"])
    samples = manifest["samples"]
    assert samples["max_mb"] == 32.0 and samples["dropped"] == []
    assert len(samples["checks"]) == 3 and samples["bytes"] <= 32 * 2**20
    assert samples["bytes"] == (tmp_path / "model.samples.npz").stat().st_size
    result = _verify_cli(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    print(
        f"vit_b_16 golden samples: {samples['bytes'] / 1e6:.2f} MB, checks {[c['source'] for c in samples['checks']]}"
    )
