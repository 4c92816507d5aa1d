"""Read a Lightning checkpoint: a ``.ckpt`` file, or the directory a sharded strategy writes.

Lightning's ``FSDPStrategy(state_dict_type="sharded")`` and ``ModelParallelStrategy`` save a
checkpoint as a torch.distributed.checkpoint (DCP) directory ``STEM.ckpt/``: ``.metadata``,
one ``__R_0.distcp`` shard file per rank, and ``meta.pt`` with the rest of the checkpoint dict
(``hyper_parameters`` included). The weights sit under ``"model"`` (FSDP) or ``"state_dict"``
(ModelParallel) in the shards (read from ``save_checkpoint`` in ``lightning/pytorch/
strategies/fsdp.py`` and ``model_parallel.py``).

A directory's weights are consolidated by DCP's own reader straight into the parameters of a
model that is already built (``dcp.load`` copies each saved chunk into the matching slice of
the tensor it is given, in place), so the full state is held once, in the model: no
consolidated copy beside it, no optimizer state read. Nothing is written into the directory.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME
from torch import nn

from lightning_deploy.errors import CheckpointError
from lightning_deploy.exporting.plan import module_device

__all__ = [
    "DCP_METADATA",
    "WEIGHT_KEYS",
    "is_sharded",
    "load_weights",
    "model_with_weights",
    "read_checkpoint_meta",
    "rebuild",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

DCP_METADATA = ".metadata"
# Where each strategy puts the model's weights inside a DCP directory.
WEIGHT_KEYS = {"model": "FSDPStrategy(state_dict_type='sharded')", "state_dict": "ModelParallelStrategy"}


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint directory (torch.distributed.checkpoint) rather than a file."""
    return Path(path).is_dir()


def read_checkpoint_meta(path: str | os.PathLike[str], trusted: bool = False, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict without the sharded weights: a file's whole dict, a directory's ``meta.pt``.

    Read with ``torch.load(weights_only=True)`` (tensors and plain Python values only; a
    Lightning checkpoint is just that) unless ``trusted``: a file from elsewhere must not run
    code when it is read. The callback trusts the checkpoint its own run just wrote. With
    ``mmap`` the tensors of a file in torch's zip format are mapped from the disk, not read.

    Raises:
        CheckpointError: naming the path and what is missing, unreadable or refused.
    """
    path = Path(path)
    source = path / _METADATA_FILENAME if is_sharded(path) else path
    if is_sharded(path):
        _check_directory(path)
        if not source.is_file():
            raise CheckpointError(
                f"{path}: the checkpoint directory has no {_METADATA_FILENAME} (Lightning writes the hyperparameters"
                " and the rest of the checkpoint there). HINT: copy the whole directory as training wrote it."
            )
    try:
        mapped = mmap and zipfile.is_zipfile(source)  # torch maps only its zip format, not the legacy one
        checkpoint = torch.load(source, map_location="cpu", weights_only=not trusted, mmap=mapped)
    except pickle.UnpicklingError as err:
        raise _refused(source, err) from None
    except Exception as err:  # noqa: BLE001 - any other unpickling failure means the same to the user
        raise CheckpointError(f"{source}: cannot read it as a checkpoint ({type(err).__name__}: {err}).") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{source}: not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict).")
    return checkpoint


def _refused(source: Path, err: Exception) -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` would not read: refused objects, or not a checkpoint."""
    found = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
    if not found:  # garbage, not a pickle of objects: torch's message names an opcode
        return CheckpointError(f"{source}: cannot read it as a checkpoint (UnpicklingError).")
    return CheckpointError(
        f"{source}: holds pickled Python objects that torch.load(weights_only=True) refuses ({found[0][:200]})."
        " HINT: if you trust this file, export it with --trust_checkpoint (Python: trusted=True)."
    )


def rebuild(cls: type[ModuleT], path: str | os.PathLike[str], trusted: bool = False, **init_args: Any) -> ModuleT:
    """``cls`` built as ``load_from_checkpoint`` builds it, holding the checkpoint's weights.

    Built by Lightning's own ``_load_state``, the code ``load_from_checkpoint`` runs
    (``hyper_parameters`` with ``init_args`` over them, ``configure_model``,
    ``on_load_checkpoint``, the weights loaded strictly). A file is read first with its tensors
    mapped from the disk (``torch.load(mmap=True)``, which ``load_from_checkpoint`` cannot ask
    for: it hands torch a file object), so its weights are copied into the model without ever
    being held twice in memory. A directory's model is built with an empty ``state_dict`` and
    the shards are then consolidated into it by :func:`load_weights`, so they are held once.
    """
    from lightning.pytorch.core.saving import _load_state
    from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint

    path = Path(path)
    checkpoint = read_checkpoint_meta(path, trusted, mmap=True)
    if not is_sharded(path):
        checkpoint = _pl_migrate_checkpoint(checkpoint, checkpoint_path=path)
        checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {}).update(init_args)  # as load_from_checkpoint does
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict).")
        return _load_state(cls, checkpoint, **init_args)
    with warnings.catch_warnings():  # the weights come next, so "keys not in the checkpoint" is expected here
        warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in")
        model = _load_state(cls, {**checkpoint, "state_dict": {}}, strict=False, **init_args)
    load_weights(model, path)
    return model


def load_weights(module: nn.Module, path: str | os.PathLike[str], trusted: bool = False) -> None:
    """Load the checkpoint's model weights into ``module`` (strict: every key, no extra).

    A file is read with ``torch.load``; a directory is consolidated into ``module``'s own
    tensors by ``torch.distributed.checkpoint.load`` without collectives (``no_dist=True``),
    so it runs on global rank zero alone while the other ranks wait.

    Raises:
        CheckpointError: for an unreadable file, a partial directory, or weights that do not
            fit ``module`` (missing or unexpected keys, wrong shapes).
    """
    path = Path(path)
    if not is_sharded(path):
        checkpoint = read_checkpoint_meta(path, trusted)
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict).")
        _fit(module, checkpoint["state_dict"], path)
        return
    key, saved = _check_directory(path)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    target = module.state_dict()  # tensors that share storage with the parameters and buffers
    unexpected = sorted(set(saved).difference(target))
    missing = sorted(set(target).difference(saved))
    resized = [
        f"{name} {list(saved[name])} in the checkpoint, {list(tensor.shape)} in the model"
        for name, tensor in target.items()
        if saved.get(name) is not None and tuple(saved[name]) != tensor.shape
    ]
    if missing or unexpected or resized:
        raise CheckpointError(
            f"{path}: its weights do not fit {type(module).__name__}: missing {missing[:5]}, unexpected"
            f" {unexpected[:5]}, other shapes {resized[:3]}. HINT: rebuild the model class (and hyperparameters)"
            " that trained this checkpoint."
        )
    try:
        dcp.load({key: target}, checkpoint_id=path, no_dist=True)
    except (Exception, CheckpointException) as err:  # noqa: BLE001 - DCP's own exception is a BaseException
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path}: torch.distributed.checkpoint could not read the weights: {detail}") from None


def _fit(module: nn.Module, state: dict[str, Any], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(
            f"{path}: its weights do not fit {type(module).__name__} ({detail})."
            " HINT: rebuild the model class (and hyperparameters) that trained this checkpoint."
        ) from None


def _check_directory(path: Path) -> tuple[str, dict[str, torch.Size | None]]:
    """The weights' key (``model`` or ``state_dict``) and their names and shapes (``None``: not a tensor).

    Every shard file the metadata names must exist.
    """
    from torch.distributed.checkpoint import FileSystemReader

    if not (path / DCP_METADATA).is_file():
        raise CheckpointError(
            f"{path}: a directory, but not a torch.distributed.checkpoint: {DCP_METADATA} is missing"
            f" (a sharded Lightning checkpoint holds it, __R_0.distcp shard files and {_METADATA_FILENAME})."
            " HINT: pass the checkpoint directory as training wrote it, or a .ckpt file."
        )
    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as err:  # noqa: BLE001 - a truncated or foreign .metadata
        raise CheckpointError(f"{path}: cannot read {DCP_METADATA} ({type(err).__name__}: {err}).") from None
    shards = sorted({info.relative_path for info in metadata.storage_data.values()})
    absent = [name for name in shards if not (path / name).is_file()]
    if absent:
        raise CheckpointError(
            f"{path}: shard file(s) {absent} listed in {DCP_METADATA} are missing ({len(shards)} expected)."
            " HINT: copy every shard file; each rank wrote one."
        )
    paths = metadata.planner_data or {}
    names: dict[str, dict[str, torch.Size | None]] = {}
    for flat_key, item in metadata.state_dict_metadata.items():
        parts = [str(p) for p in paths.get(flat_key, flat_key.split(".", 1))]
        names.setdefault(parts[0], {})[".".join(parts[1:])] = getattr(item, "size", None)
    key = next((k for k in WEIGHT_KEYS if k in names), None)
    if key is None:
        raise CheckpointError(
            f"{path}: holds no model weights under {list(WEIGHT_KEYS)} (where {', '.join(WEIGHT_KEYS.values())}"
            f" put them); its top-level keys are {sorted(names)}."
        )
    return key, names[key]


def model_with_weights(trainer: pl.Trainer | None, pl_module: nn.Module, path: str | None) -> nn.Module:
    """A model on the training device holding the checkpoint's weights; ``pl_module`` is neither moved nor changed.

    For a checkpoint file, a copy of ``pl_module`` (the trainer is shared, not copied). For a
    sharded directory (FSDP, ModelParallel), a fresh instance of its class built from the
    checkpoint's hyperparameters, into which the shards are consolidated: after sharded
    training ``pl_module``'s parameters may be flattened or DTensors, and a fresh build holds
    the weights once.
    """
    device = trainer.strategy.root_device if trainer is not None else module_device(pl_module, ())
    # At fit end the checkpoint is the one this run just wrote, so it may be fully unpickled;
    # without a trainer it came from elsewhere and is read with weights_only=True.
    if path and is_sharded(path):
        try:
            model = rebuild(type(pl_module), path, trusted=trainer is not None)
        except TypeError as err:
            raise CheckpointError(
                f"{path}: cannot rebuild {type(pl_module).__name__} from the sharded checkpoint ({err})."
                " HINT: call self.save_hyperparameters() in its __init__, so meta.pt records its arguments."
            ) from None
        return model.to(device)
    memo = {id(trainer): trainer} if trainer is not None else {}
    if not path:
        return copy.deepcopy(pl_module, memo).to(device)
    return _copy_holding(pl_module, memo, Path(path), trusted=trainer is not None).to(device)


def _copy_holding(pl_module: nn.Module, memo: dict[int, Any], path: Path, trusted: bool) -> nn.Module:
    """A copy of ``pl_module`` whose weights are the checkpoint file's own tensors, mapped from the disk.

    The file is read with ``torch.load(mmap=True)``, and ``deepcopy`` is told (its ``memo``) to
    put each checkpoint tensor where ``pl_module`` holds the weight of that name, instead of
    copying ``pl_module``'s: the copy's weights are pages of the file, which the kernel reads as
    they are used and may drop again, so exporting a model the size of a third of the machine's
    memory holds no second full copy beside the trained one. Every reference to a weight in
    ``pl_module`` (a tied one under two names, an attribute holding it) refers to the same
    checkpoint tensor in the copy. Private mapping: a write into a weight changes this process's
    copy, never the file. Names and shapes are checked as ``load_state_dict(strict=True)`` does.
    """
    own = pl_module.state_dict(keep_vars=True)  # the tensor objects, tied ones under each of their names
    checkpoint = read_checkpoint_meta(path, trusted, mmap=True)
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict).")
    tensors = {name: t for name, t in own.items() if isinstance(t, torch.Tensor)}
    missing, unexpected = sorted(set(tensors).difference(saved)), sorted(set(saved).difference(own))
    resized = [f"{name} {list(saved[name].shape)} in the checkpoint, {list(t.shape)} in the model"
               for name, t in tensors.items() if name in saved and saved[name].shape != t.shape]  # fmt: skip
    if missing or unexpected or resized:
        raise CheckpointError(
            f"{path}: its weights do not fit {type(pl_module).__name__}: missing {missing[:5]}, unexpected"
            f" {unexpected[:5]}, other shapes {resized[:3]}. HINT: rebuild the model class (and hyperparameters)"
            " that trained this checkpoint."
        )
    for name, tensor in tensors.items():
        if id(tensor) in memo:  # tied: the tensor under its first name serves every name
            continue
        weight = saved[name].to(tensor.dtype)  # as load_state_dict casts (no copy where they agree)
        memo[id(tensor)] = nn.Parameter(weight, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else weight
    model = copy.deepcopy(pl_module, memo)
    extra = {name: value for name, value in saved.items() if name not in tensors}  # modules' get_extra_state()
    if extra:
        model.load_state_dict(extra, strict=False)
    return model
