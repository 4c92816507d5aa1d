"""The eager reference: how the model is run to get the outputs every artifact is compared with.

Two things make eager a fair reference:

- **Attention fast paths off.** In eval mode under ``no_grad``, ``nn.MultiheadAttention`` and
  ``nn.TransformerEncoderLayer`` take a fused "fast path" (nested tensors, fused kernels)
  that tracing records as ``aten::is_autocast_enabled`` and ``_transformer_encoder_layer_fwd``
  and that torch.export guards on data. ``torch.backends.mha.set_fastpath_enabled(False)`` is
  torch's own switch for it: captures and the reference both take the plain math path, and
  :func:`fast_path_agreement` checks that the fast path (what users run eagerly) agrees.
- **Failures named.** When the model itself fails on the second sample, the error names the
  input leaves and dims that were changed and the options that fix it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_deploy.artifact.contract import Call
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.adapters import FlatTree
from lightning_deploy.exporting.dynamic import DynamicDims
from lightning_deploy.exporting.options import ExportOptions
from lightning_deploy.verification.compare import compare_leaves

__all__ = ["attention_fast_path", "changed_dims", "fast_path_agreement", "run_eager"]


@contextlib.contextmanager
def attention_fast_path(enabled: bool) -> Iterator[None]:
    """Switch PyTorch's fused attention fast path on or off for the block (restored after)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def run_eager(
    module: nn.Module,
    call: Call,
    arguments: Mapping[str, Any],
    changes: Sequence[str],
    options: ExportOptions,
) -> Any:
    """Call ``module`` with the bound ``arguments``; a failure becomes a ``ConfigurationError`` naming the fix.

    ``changes`` describes how these arguments differ from the user's sample (``"input 'x' dim 0
    ('batch'): 2 -> 3"``); empty when they are the sample itself.
    """
    args, kwargs = call.split(arguments)
    try:
        return module(*args, **kwargs)
    except Exception as err:  # the user's model failed: say why and what to change (raised again)
        owner, name = options.owner, type(module).__name__
        if not changes:
            raise ConfigurationError(
                f"{owner}(input_sample=...): {name}.forward fails on the sample itself: {type(err).__name__}: {err}."
                " HINT: pass a sample that the model accepts (example_input_array's convention: a tuple"
                " holds positional arguments, a dict keyword arguments)."
            ) from err
        raise ConfigurationError(
            f"{owner}(dynamic_batch={options.dynamic_batch}, dynamic_axes={options.dynamic_axes}): {name}.forward"
            f" fails when its dynamic dims change ({'; '.join(changes)}): {type(err).__name__}: {err}."
            " HINT: mark dynamic only the dims that may vary. Where a leaf holds the batch in another dim"
            " (an RNN's hidden state: dim 1), pass dynamic_batch=False and name the dims in dynamic_axes,"
            " e.g. dynamic_axes={'input': {0: 'batch'}, 'hidden': {1: 'batch'}}."
        ) from err


def changed_dims(
    names: Sequence[str], before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], dims: DynamicDims
) -> list[str]:
    """How the dynamic dims of ``after`` differ from ``before``, one phrase per changed dim."""
    return [
        f"input '{name}' dim {dim} ({axis!r}): {a.shape[dim]} -> {b.shape[dim]}"
        for name, a, b, leaf_dims in zip(names, before, after, dims)
        for dim, axis in leaf_dims.items()
        if a.shape[dim] != b.shape[dim]
    ]


def _numpy(tensor: torch.Tensor) -> Any:
    return tensor.detach().cpu().float().numpy()


def fast_path_agreement(
    module: nn.Module,
    call: Call,
    samples: Sequence[Mapping[str, Any]],
    outputs: FlatTree,
    plain: Sequence[Sequence[torch.Tensor]],
    atol: float,
    rtol: float,
) -> dict[str, Any] | None:
    """Compare eager with the attention fast path on against the plain outputs ``plain``.

    Returns ``None`` for a model without ``nn.MultiheadAttention`` (no fast path to take),
    else ``{"ok", "max_abs_diff", "error"}``: the artifacts reproduce the plain path, so where
    the fast path differs (padded positions of a key padding mask, say) the manifest says so.
    """
    if not any(isinstance(m, nn.MultiheadAttention) for m in module.modules()):
        return None
    diffs = []
    with attention_fast_path(True):
        for arguments, want in zip(samples, plain):
            args, kwargs = call.split(arguments)
            got = outputs.tensors(module(*args, **kwargs))
            diffs += compare_leaves(outputs.names, [_numpy(g) for g in got], [_numpy(w) for w in want], atol, rtol)
    failed = [d for d in diffs if not d.ok]
    error = None
    if failed:
        error = (
            "eager with PyTorch's attention fast path differs from its math path, which the artifacts reproduce: "
            + "; ".join(d.describe(atol, rtol) for d in failed[:3])
        )
    return {"ok": not failed, "max_abs_diff": max((d.max_abs for d in diffs), default=0.0), "error": error}
