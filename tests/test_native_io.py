"""Scripted TorchScript with native I/O: lists of any length in, the model's own structure out."""

from __future__ import annotations

from typing import Dict, List  # noqa: UP035 - TorchScript reads typing's generics

import numpy as np
import torch
from torch import nn

from lightning_deploy import export, load


class _PerItem(nn.Module):
    """A list of variable-length sequences in, one dict per sequence out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 3)

    def forward(self, items: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:  # noqa: UP006
        return [{"mean": self.proj(x).mean(0), "peak": self.proj(x).amax(0)} for x in items]


class _WrongForOneItem(_PerItem):
    """Scripted, it answers zeros for a one-item list: only a check at list length 1 can see it."""

    def forward(self, items: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:  # noqa: UP006
        if torch.jit.is_scripting() and len(items) == 1:
            return [{"mean": torch.zeros(3), "peak": torch.zeros(3)}]
        return [{"mean": self.proj(x).mean(0), "peak": self.proj(x).amax(0)} for x in items]


def _export(module: nn.Module, folder) -> dict:
    sample = ([torch.randn(6, 4), torch.randn(6, 4)],)
    return export(module, sample, folder, "items", formats=["torchscript", "onnx"], method="script",
                  dynamic_batch=False, dynamic_axes={"items": {0: "length"}})  # fmt: skip


def test_scripted_torchscript_is_verified_at_list_lengths_one_two_and_three(tmp_path):
    manifest = _export(_PerItem(), tmp_path)
    torchscript, onnx = manifest["artifacts"]
    assert torchscript["ok"] and torchscript["io"] == "native", torchscript["error"]
    assert [len(shapes) for shapes in torchscript["checked_shapes"]] == [2, 2, 2, 1, 3]
    assert torchscript["checked_shapes"][4] == [[8, 4], [8, 4], [6, 4]]  # grown list mixes both lengths
    assert onnx["ok"] and onnx["io"] == "flat"  # a graph of fixed arity: the export sample's list length
    assert [len(shapes) for shapes in onnx["checked_shapes"]] == [2, 2, 2]


def test_native_artifact_loads_and_runs_any_list_length_like_eager(tmp_path):
    module = _PerItem().eval()
    _export(module, tmp_path)
    runner = load(tmp_path / "items.torchscript.pt")
    items = [torch.randn(n, 4) for n in (2, 5, 7, 3, 11)]
    got = runner(items)
    with torch.no_grad():
        want = module(items)
    assert len(got) == 5
    for g, w in zip(got, want):
        assert set(g) == {"mean", "peak"}
        torch.testing.assert_close(g["mean"], w["mean"])
        torch.testing.assert_close(g["peak"], w["peak"])
    as_numpy = runner(items=[x.numpy() for x in items])
    assert isinstance(as_numpy[4]["peak"], np.ndarray)
    np.testing.assert_allclose(as_numpy[4]["peak"], want[4]["peak"].numpy(), rtol=1e-6)
    by_name = runner.outputs_by_name(items[:1])
    assert sorted(by_name) == ["out.0.mean", "out.0.peak"]


def test_a_difference_only_at_list_length_one_fails_verification(tmp_path):
    manifest = _export(_WrongForOneItem(), tmp_path)
    torchscript = manifest["artifacts"][0]
    assert not torchscript["ok"]
    assert "lists cut to one item, input shapes [[6, 4]]" in torchscript["error"]
    assert "out.0.mean" in torchscript["error"]
