"""Top-1 accuracy of the eager model and of an artifact on labelled data: the int8 accuracy delta.

Tolerances say how far an int8 artifact's numbers moved; what a user needs to know is whether
its predictions did. ``accuracy_delta`` runs both on the same labelled batches (a validation
``DataLoader``) and counts correct top-1 predictions of the first output leaf.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.adapters import bind_sample, flatten_tree

__all__ = ["accuracy_delta", "input_leaves"]

FlatModel = Callable[[Sequence[torch.Tensor]], Sequence[Any]]


def accuracy_delta(module: torch.nn.Module, eager: FlatModel, artifact: FlatModel, batches: Iterable[Any]) -> dict:
    """Top-1 accuracy of ``eager`` and ``artifact`` (both taking flat input leaves) on ``batches``.

    Every batch is ``(input_sample, labels)``: the sample by ``example_input_array``'s
    convention, ``labels`` integer class indices of shape ``[N]``; the first output leaf holds
    the class scores ``[N, classes]``.

    Raises:
        ConfigurationError: for a batch or an output of another form, naming what was found.

    """
    correct = {"eager": 0, "artifact": 0}
    samples = 0
    for batch in batches:
        sample, labels = _labelled(batch)
        arguments, _ = bind_sample(module, sample, "accuracy_data")
        _, leaves = flatten_tree(arguments, None, "accuracy_data's input", ConfigurationError)
        for name, predict in (("eager", eager), ("artifact", artifact)):
            scores = torch.as_tensor(predict(leaves)[0]).cpu()
            if scores.shape[:1] != labels.shape or scores.dim() != 2:
                raise ConfigurationError(
                    f"accuracy_data: the first output has shape {list(scores.shape)} for {labels.shape[0]} labels;"
                    " top-1 accuracy needs class scores [N, classes]. HINT: pass accuracy_data only for classifiers."
                )
            correct[name] += int((scores.argmax(-1) == labels).sum())
        samples += labels.shape[0]
    if not samples:
        raise ConfigurationError("accuracy_data holds no batch. HINT: pass a non-empty validation DataLoader.")
    eager_accuracy, artifact_accuracy = correct["eager"] / samples, correct["artifact"] / samples
    return {"samples": samples, "eager": eager_accuracy, "artifact": artifact_accuracy,
            "delta": artifact_accuracy - eager_accuracy}  # fmt: skip


def input_leaves(module: torch.nn.Module, batches: Iterable[Any], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """The flat input leaves of the first ``limit`` labelled batches: calibration data for static int8.

    Raises:
        ConfigurationError: for a batch of another form than ``(input_sample, labels)``.
    """
    found = []
    for batch in itertools.islice(batches, limit):
        sample, _ = _labelled(batch)
        arguments, _ = bind_sample(module, sample, "accuracy_data")
        _, leaves = flatten_tree(arguments, None, "accuracy_data's input", ConfigurationError)
        found.append(tuple(leaves))
    return found


def _labelled(batch: Any) -> tuple[Any, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        labels = torch.as_tensor(batch[1])
        if labels.dim() == 1 and not labels.is_floating_point():
            return batch[0], labels
    raise ConfigurationError(
        f"accuracy_data: a batch is {type(batch).__name__}, not (input_sample, integer labels [N])."
        " HINT: pass a DataLoader of (inputs, class indices) pairs, e.g. the validation loader."
    )
