"""Verification goes through load()'s own path: "ok" means load() runs the artifact and matches eager."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
import torch.utils._pytree as pytree
from models import ShapeBranch
from torch import nn

from lightning_deploy import export, load
from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.structure import Record
from lightning_deploy.exporting.plan import Plan

FORMATS = ["onnx", "torchscript", "pt2"]


class TwoHeads(nn.Module):
    def forward(self, x: torch.Tensor) -> dict:
        return {"a": x * 2, "b": x - 1}


@pytest.mark.parametrize(
    "corrupt",
    [
        # the garbage the old adapter saved for a ModelOutput: no leaf where two are
        lambda tree: {"kind": "dataclass", "class": "x.Y", "fields": ["b"], "items": [{"kind": "none"}]},
        # keys swapped: every leaf still has a place, but under the other's name
        lambda tree: {**tree, "keys": tree["keys"][::-1]},
    ],
    ids=["garbage", "swapped-keys"],
)
def test_a_corrupted_output_schema_makes_every_artifact_fail(tmp_path, monkeypatch, corrupt):
    contract_of = Plan.contract

    def corrupted(plan):
        io = contract_of(plan).to_json()
        io["outputs"]["schema"] = {**io["outputs"]["schema"], "tree": corrupt(io["outputs"]["schema"]["tree"])}
        return dataclasses.replace(IOContract.from_json(io), call=plan.call)

    monkeypatch.setattr(Plan, "contract", corrupted)
    manifest = export(TwoHeads(), torch.randn(2, 3), tmp_path, "m", formats=FORMATS)
    for artifact in manifest["artifacts"]:
        assert not artifact["ok"], artifact["format"]
        assert artifact["error"]


def test_the_same_model_verifies_with_its_real_schema(tmp_path):
    manifest = export(TwoHeads(), torch.randn(2, 3), tmp_path, "m", formats=FORMATS)
    assert [a["ok"] for a in manifest["artifacts"]] == [True, True, True]
    x = torch.randn(5, 3)
    for artifact in manifest["artifacts"]:
        out = load(tmp_path / artifact["path"])(x)
        torch.testing.assert_close(out["a"], x * 2)
        torch.testing.assert_close(out["b"], x - 1)


class Untrained(nn.Module):
    """One real output and one whose scale (1e-20) is far inside the tolerance: comparing it proves nothing."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"real": x + 1, "tiny": x * 1e-20}


def test_vacuous_comparisons_are_flagged_and_warned(tmp_path):
    with pytest.warns(UserWarning, match=r"out.tiny.*proves nothing"):
        manifest = export(Untrained(), torch.randn(2, 3), tmp_path, "m", formats=["onnx"])
    (artifact,) = manifest["artifacts"]
    assert artifact["ok"] and artifact["vacuous"] is True
    assert artifact["vacuous_leaves"] == ["out.tiny"]
    assert any("proves nothing" in w for w in artifact["warnings"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        manifest = export(TwoHeads(), torch.randn(2, 3), tmp_path, "n", formats=["onnx"])
    assert manifest["artifacts"][0]["vacuous"] is False


class Detected:
    """A user type registered the way torch documents it: without key paths (like detectron2's Instances)."""

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor) -> None:
        self.boxes, self.scores = boxes, scores


pytree.register_pytree_node(
    Detected,
    lambda d: ([d.boxes, d.scores], None),
    lambda values, _: Detected(*values),
    serialized_type_name="tests.test_verification.Detected",
)


class Detector(nn.Module):
    def forward(self, x: torch.Tensor) -> list:
        return [Detected(x * 2, x.sum(-1))]


def test_a_type_registered_without_key_paths_exports_and_comes_back_as_a_record(tmp_path):
    manifest = export(Detector(), torch.randn(2, 4), tmp_path, "m", formats=["onnx", "torchscript"])
    assert [a["ok"] for a in manifest["artifacts"]] == [True, True], [a["error"] for a in manifest["artifacts"]]
    assert manifest["outputs"]["names"] == ["out.0.0", "out.0.1"]
    node = manifest["outputs"]["schema"]["tree"]["items"][0]
    assert node["kind"] == "record" and node["class"].endswith("Detected") and node["fields"] == ["0", "1"]
    x = torch.randn(3, 4)
    (record,) = load(tmp_path / "m.onnx")(x)
    assert isinstance(record, Record) and type(record).__name__ == "Detected"
    torch.testing.assert_close(record[0], x * 2)
    torch.testing.assert_close(record["1"], x.sum(-1))


def test_errors_are_plain_text_and_name_input_leaves(tmp_path):
    manifest = export(ShapeBranch(), torch.randn(2, 4), tmp_path, "m", formats=["pt2"])
    (artifact,) = manifest["artifacts"]
    assert not artifact["ok"]
    error = artifact["attempts"][0]["error"]
    assert "input 'x'" in error and "tensors" not in error
    assert "\x1b[" not in json.dumps(manifest)


def test_fast_path_agreement_is_recorded_for_attention_models(tmp_path):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    manifest = export(layer, torch.randn(2, 5, 16), tmp_path, "m", formats=["onnx", "torchscript"],
                      dynamic_axes={"src": {1: "seq"}})  # fmt: skip
    assert manifest["attention_fast_path"]["ok"], manifest["attention_fast_path"]
    assert [a["ok"] for a in manifest["artifacts"]] == [True, True]
    trace = manifest["artifacts"][1]["attempts"][0]
    assert trace["method"] == "trace" and trace["ok"], trace  # the math path's trace verifies at two lengths
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is restored
    assert export(nn.Linear(2, 2), torch.randn(2, 2), tmp_path, "n", formats=["onnx"])["attention_fast_path"] is None


class SplitHeads(nn.Module):
    """nn.MultiheadAttention's packed projection pattern: unflatten, then a transpose with a negative dim."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q.unflatten(-1, (3, q.size(-1) // 3)).unsqueeze(0).transpose(0, -2).contiguous()


def test_unflatten_then_negative_transpose_exports_through_the_traced_onnx_path(tmp_path):
    from torch.onnx._internal.torchscript_exporter.registration import registry

    manifest = export(SplitHeads(), torch.randn(2, 5, 12), tmp_path, "m", formats=["onnx"], method="trace",
                      dynamic_axes={"q": {1: "seq"}})  # fmt: skip
    (artifact,) = manifest["artifacts"]
    assert artifact["ok"], artifact["error"]
    x = torch.randn(3, 7, 12)
    torch.testing.assert_close(load(tmp_path / "m.onnx")(x), SplitHeads()(x))
    assert not registry.get_function_group("aten::unflatten").get(13).__module__.startswith("lightning_deploy")
