"""load(): structured calls, integrity, clear errors, and ONNX without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from models import StructuredModel, TwoInputs, structured_sample

from lightning_deploy import IntegrityError, LoadError, StructureError, export, load


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    dirpath = tmp_path_factory.mktemp("load")
    export(StructuredModel(), structured_sample(2), dirpath, "model", formats=["onnx", "torchscript"])
    return dirpath


def test_onnx_load_in_a_process_where_torch_cannot_import(exported, tmp_path):
    sample = structured_sample(4)
    want = StructuredModel().eval()(*sample)
    np.savez(tmp_path / "in.npz", **{k: v.numpy() for k, v in sample[0].items()})
    np.savez(tmp_path / "want.npz", logits=want.logits.detach().numpy(), second=want.parts[1].second.detach().numpy())
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported")
        import numpy as np
        from lightning_deploy import load
        model = load({str(exported / "model.onnx")!r})
        batch = dict(np.load({str(tmp_path / "in.npz")!r}))
        want = np.load({str(tmp_path / "want.npz")!r})
        out = model(batch)
        np.testing.assert_allclose(out.logits, want["logits"], atol=1e-5)
        np.testing.assert_allclose(out.parts[1].second, want["second"], atol=1e-5)
        assert type(out).__name__ == "Prediction" and out.missing is None
        assert "lightning" not in sys.modules
        print("ok", type(out.logits).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ndarray"


@pytest.mark.parametrize("where", [0.5, 0.0])  # a byte of the weights; the protobuf header (ORT cannot parse it)
def test_one_changed_byte_is_refused(exported, tmp_path, where):
    for name in ("model.onnx", "model.export.json"):
        (tmp_path / name).write_bytes((exported / name).read_bytes())
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[int(len(data) * where)] ^= 0x01
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load(tmp_path / "model.onnx")


def test_external_onnx_weights_are_loaded_and_their_bytes_checked(tmp_path, monkeypatch):
    from lightning_deploy.exporting.methods import torch_export

    monkeypatch.setattr(torch_export, "EXTERNAL_DATA_BYTES", 256)  # the StructuredModel has 848 bytes
    export(StructuredModel(), structured_sample(2), tmp_path, "model", formats=["onnx", "onnx-optimized"],
           method="export")  # fmt: skip
    manifest = json.loads((tmp_path / "model.export.json").read_text())
    onnx_entry, optimized = manifest["artifacts"]
    assert onnx_entry["ok"] and optimized["ok"], (onnx_entry["error"], optimized["error"])
    assert onnx_entry["files"] == ["model.onnx.data", "model.onnx"]
    assert list(onnx_entry["side_files_sha256"]) == ["model.onnx.data"]
    assert optimized["files"] == ["model.optimized.onnx"] and optimized["side_files_sha256"] == {}
    sample = structured_sample(5)
    want = StructuredModel().eval()(*sample).logits.detach().numpy()
    np.testing.assert_allclose(load(tmp_path / "model.onnx")(*sample).logits, want, atol=1e-5)
    data = bytearray((tmp_path / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "model.onnx.data").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model.onnx.data: sha256 mismatch"):
        load(tmp_path / "model.onnx")
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(LoadError, match=r"model.onnx.data is missing"):
        load(tmp_path / "model.onnx")


def test_missing_manifest(exported, tmp_path):
    (tmp_path / "model.onnx").write_bytes((exported / "model.onnx").read_bytes())
    with pytest.raises(LoadError, match=r"No manifest at .*model.export.json.*HINT"):
        load(tmp_path / "model.onnx")


def test_session_is_the_onnx_runtime_session_of_onnx_artifacts_only(exported):
    model = load(exported / "model.onnx", threads=1)
    assert [i.name for i in model.session.get_inputs()] == ["batch.x", "batch.mask"]
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert load(exported / "model.torchscript.pt").session is None


def test_manifest_path_picks_onnx_first(exported):
    assert load(exported / "model.export.json").format == "onnx"
    assert load(exported / "model.export.json", format="torchscript").format == "torchscript"


@pytest.mark.parametrize("fmt", ["model.onnx", "model.torchscript.pt"])
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, m: ({"x": x},), r"missing \['mask'\]"),
        (lambda x, m: ({"x": x, "mask": m, "extra": m},), r"extra \['extra'\]"),
        (lambda x, m: ({"x": x.double(), "mask": m},), r"input 'batch.x': dtype float64.*float32"),
        (lambda x, m: ({"x": x[:, :4], "mask": m},), r"input 'batch.x': shape \[3, 4\].*\[\*, 8\]"),
        (lambda x, m: ({"x": x[None], "mask": m},), r"input 'batch.x': shape \[1, 3, 8\]"),
        (lambda x, m: ([x, m],), r"input.batch: expected a dict, got list"),
        (lambda x, m: (), r"Missing argument\(s\) \['batch'\]"),
    ],
)
def test_structure_errors_name_the_leaf(exported, fmt, call, message):
    model = load(exported / fmt)
    x, mask = torch.randn(3, 8), torch.ones(3)
    with pytest.raises(StructureError, match=message):
        model(*call(x, mask))


def test_wrong_number_of_list_items(tmp_path):
    class SumList(torch.nn.Module):
        def forward(self, images: list) -> torch.Tensor:
            return images[0] + images[1]

    export(SumList(), ([torch.randn(2, 3), torch.randn(2, 3)],), tmp_path, "m", formats=["onnx"])
    model = load(tmp_path / "m.onnx")
    a = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(model([a, a]), 2 * a)
    with pytest.raises(StructureError, match=r"input.images: expected 2 items, got 3"):
        model([a, a, a])


def test_positional_and_keyword_calls(tmp_path):
    model = TwoInputs().eval()
    export(model, (torch.randn(2, 4), torch.randn(2, 3)), tmp_path, "m", formats=["onnx"])
    runner = load(tmp_path / "m.onnx")
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    want = model(x, y).detach()
    for got in (runner(x, y), runner(x, y=y), runner(y=y, x=x)):
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(StructureError, match="given twice"):
        runner(x, x=x)


def test_onnx_session_options_threads_and_providers(exported):
    sample = structured_sample(3)
    want = StructuredModel().eval()(*sample).logits.detach()
    one_thread = load(exported / "model.onnx", threads=1)
    assert one_thread._run.session.get_session_options().intra_op_num_threads == 1
    assert one_thread._run.session.get_providers()[-1] == "CPUExecutionProvider"
    torch.testing.assert_close(one_thread(*sample).logits, want, atol=1e-5, rtol=1e-4)
    with pytest.raises(LoadError, match=r"providers=\['NoSuchExecutionProvider'\].*available"):
        load(exported / "model.onnx", providers=["NoSuchExecutionProvider"])


def test_torch_tensors_through_onnx_share_memory_and_any_tensor_works(exported):
    """Torch in, torch out of an ONNX artifact: plain CPU tensors by their own memory, and the others
    (needing grad, non-contiguous, inference-mode) converted; every call matches eager."""
    path = exported / "model.onnx"
    model = load(path)
    reference = StructuredModel().eval()
    (batch,) = structured_sample(3)
    variants = {
        "plain": batch,
        "requires_grad": {"x": batch["x"].clone().requires_grad_(True), "mask": batch["mask"]},
        "non_contiguous": {"x": torch.randn(8, 3).t(), "mask": batch["mask"]},
    }
    with torch.inference_mode():
        variants["inference_mode"] = {k: v.clone() for k, v in batch.items()}
    for name, inputs in variants.items():
        got = model(inputs)
        with torch.no_grad():
            want = reference({k: v.detach() for k, v in inputs.items()})
        assert isinstance(got.logits, torch.Tensor) and got.logits.device.type == "cpu", name
        torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-4, msg=name)
    # a wrong dtype is still named by leaf, although ONNX Runtime is asked first
    with pytest.raises(StructureError, match=r"input 'batch\.x': dtype float64"):
        model({"x": batch["x"].double(), "mask": batch["mask"]})
