"""Wrong inputs to a loaded model: each is our error naming the leaf, never a runtime's own exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_deploy import StructureError, export, load

FORMATS = ["onnx", "torchscript", "pt2"]


class Tagger(nn.Module):
    """Takes ``{"x": float [B, 8], "ids": int64 [B, 4]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(batch["x"] + self.embed(batch["ids"]).mean(1))


def _batch(size: int = 2, **changes) -> dict:
    batch = {"x": torch.randn(size, 8), "ids": torch.randint(0, 10, (size, 4))}
    return {**batch, **changes}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    export(Tagger().eval(), (_batch(),), folder, "model", formats=FORMATS)
    return {fmt: load(folder / "model.export.json", format=fmt) for fmt in FORMATS}


CASES = {
    "dtype": (lambda: _batch(x=torch.randn(2, 8, dtype=torch.float64)), r"input 'batch.x': dtype float64"),
    "rank": (lambda: _batch(x=torch.randn(2, 8, 1)), r"input 'batch.x': shape \[2, 8, 1\] does not fit"),
    "static dim": (lambda: _batch(x=torch.randn(2, 9)), r"input 'batch.x': shape \[2, 9\] does not fit"),
    "missing key": (lambda: {"x": torch.randn(2, 8)}, r"keys do not match .* missing \['ids'\]"),
    "extra key": (lambda: _batch(extra=torch.zeros(2)), r"keys do not match .* extra \['extra'\]"),
    "structure": (lambda: [torch.randn(2, 8), torch.zeros(2, 4)], r"expected a dict, got list"),
    "NaN for integers": (lambda: _batch(ids=np.full((2, 4), np.nan)), r"input 'batch.ids': dtype float64"),
    "batch sizes differ": (
        lambda: _batch(ids=torch.zeros(3, 4, dtype=torch.long)),
        r"'batch': it is 2 in input 'batch.x' and 3",
    ),
    "a string": (lambda: _batch(x="hello"), r"batch.x: expected an array or tensor, got str"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_wrong_inputs_name_the_leaf(loaded, fmt, case):
    make, message = CASES[case]
    with pytest.raises(StructureError, match=message):
        loaded[fmt](make())


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_right_input_still_runs_at_another_batch(loaded, fmt):
    out = loaded[fmt](_batch(5))
    assert tuple(out.shape) == (5, 3)
