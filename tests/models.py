"""Small models with structured I/O and control flow, shared by the tests and subprocesses."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn


@dataclasses.dataclass
class Prediction:
    logits: torch.Tensor
    stats: dict
    parts: list
    missing: None = None


class Pair(NamedTuple):
    first: torch.Tensor
    second: torch.Tensor


class StructuredModel(nn.Module):
    """Takes {"x", "mask"}, returns a dataclass with a nested dict, a list and None."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, batch: dict) -> Prediction:
        logits = self.encoder(batch["x"]) * batch["mask"].unsqueeze(-1)
        stats = {"summary": {"mean": logits.mean(-1), "max": logits.amax(-1)}, "nothing": None}
        pair = Pair(torch.softmax(logits, -1), logits.abs())
        return Prediction(logits, stats, [logits.sum(-1), pair], None)


def structured_sample(batch: int = 2) -> tuple[dict]:
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 8, generator=generator)
    mask = (torch.rand(batch, generator=generator) > 0.3).float()
    return ({"x": x, "mask": mask},)


class ShapeBranch(nn.Module):
    """Branches on the batch size: tracing bakes in one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            return x * 2
        return x - 1


class ValueBranch(nn.Module):
    """Branches on a tensor's value: tracing bakes in one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class NoOnnxOp(nn.Module):
    """Uses an op with no ONNX translation (complex eigenvalues); TorchScript still works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x @ x.transpose(-1, -2)).real


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + y


class Opaque:
    """An object a checkpoint may pickle (in its hyperparameters): weights_only loading refuses it."""

    def __init__(self, value: int = 1) -> None:
        self.value = value


class TokenClassifier(nn.Module):
    """Token ids (int64, [batch, length]) to class logits: an integer input with a second dynamic axis."""

    def __init__(self, vocab: int = 50, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.embedding = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(1))
