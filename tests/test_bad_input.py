"""Bad arguments raise the package's error, naming the argument, before any file is written."""

from __future__ import annotations

import pytest
import torch
from models import StructuredModel, TwoInputs, structured_sample
from torch import nn

from lightning_deploy import ConfigurationError, export

PAIR = (torch.randn(2, 4), torch.randn(2, 3))


class TakesScale(nn.Module):
    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return x * scale


class TakesScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


BAD = [
    (TwoInputs(), PAIR, {"formats": ["onx"]}, r"formats=\['onx'\].*unknown format"),
    (TwoInputs(), PAIR, {"formats": []}, r"formats=\[\].*non-empty"),
    (TwoInputs(), PAIR, {"method": "jit"}, r"method='jit'.*must be one of"),
    (TwoInputs(), PAIR, {"method": "export", "formats": ["torchscript"]}, r"method='export'.*cannot produce"),
    (TwoInputs(), PAIR, {"method": "trace", "formats": ["pt2"]}, r"method='trace'.*cannot produce"),
    (TwoInputs(), PAIR, {"atol": -1e-4}, r"atol=-0.0001.*>= 0"),
    (TwoInputs(), PAIR, {"rtol": float("nan")}, r"rtol=nan.*finite"),
    (TwoInputs(), PAIR, {"opset": 3}, r"opset=3.*opset number"),
    (TwoInputs(), PAIR, {"verify": "yes"}, r"verify='yes'.*True or False"),
    (TwoInputs(), PAIR, {"dynamic_axes": {"z": {1: "width"}}}, r"dynamic_axes.*'z' names no input.*\['x', 'y'\]"),
    (TwoInputs(), PAIR, {"dynamic_axes": {"x": {5: "deep"}}}, r"dynamic_axes.*'x' has 2 dims, so dim 5"),
    (TwoInputs(), PAIR, {"dynamic_axes": {"x": {-1: "last"}}}, r"dynamic_axes.*dims are ints >= 0"),
    (TwoInputs(), PAIR, {"stem": "sub/model"}, r"stem='sub/model'.*plain file name"),
    (TakesScale(), (torch.randn(2, 3), 2.0), {}, r"input_sample leaf 'scale' is a float.*HINT"),
    (TakesScalar(), torch.tensor(3.0), {}, r"dynamic_batch=True.*'x' is 0-dimensional.*dynamic_batch=False"),
    (TwoInputs(), (torch.randn(2, 4),), {}, r"input_sample does not fit TwoInputs.forward"),
    (StructuredModel(), structured_sample()[0], {}, r"input_sample does not fit.*wrap it: \(sample,\)"),
    (TwoInputs(), None, {}, r"input_sample=None"),
    ("not a module", PAIR, {}, r"module=.*expected a torch.nn.Module"),
]


@pytest.mark.parametrize(("module", "sample", "kwargs", "message"), BAD, ids=[b[3].split("=")[0][:20] for b in BAD])
def test_bad_input_raises_before_any_file(tmp_path, module, sample, kwargs, message):
    target = tmp_path / "out"
    kwargs = {"stem": "model", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        export(module, sample, target, **kwargs)
    assert not target.exists()


def test_errors_are_value_errors():
    assert issubclass(ConfigurationError, ValueError)


def test_dirpath_that_is_a_file(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(ConfigurationError, match=r"dirpath=.*is a file"):
        export(TwoInputs(), PAIR, file, "model")
    assert file.read_text() == "x"
