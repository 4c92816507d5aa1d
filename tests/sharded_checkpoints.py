"""Sharded checkpoint directories in Lightning's layout, written by torch.distributed.checkpoint.

``FSDPStrategy(state_dict_type="sharded")`` and ``ModelParallelStrategy`` write
``{"model" | "state_dict": weights, "optimizer_0": ...}`` with ``dcp.save`` (one shard file per
rank) and the rest of the checkpoint dict to ``meta.pt`` on rank zero (their
``save_checkpoint``). Lightning refuses FSDP on the CPU, so these are made here the same way:
from one process, or (run as a script under ``torch.distributed.run``) from a real gloo group
where each rank saves its shards of DTensors sharded along dim 0.

Usage: python -m torch.distributed.run --nproc_per_node N tests/sharded_checkpoints.py OUT_DIR KEY
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.fabric.utilities.load import _METADATA_FILENAME


def split_checkpoint(checkpoint: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the strategies' ``save_checkpoint`` does: (state for dcp.save, the rest for meta.pt)."""
    rest = dict(checkpoint)
    state = {key: rest.pop("state_dict")}
    state.update({f"optimizer_{i}": o for i, o in enumerate(rest.pop("optimizer_states", []))})
    return state, rest


def save_from_one_process(checkpoint: dict[str, Any], directory: Path, key: str = "model") -> None:
    """A Lightning checkpoint dict written as a sharded directory by a single process (one shard file)."""
    state, rest = split_checkpoint(checkpoint, key)
    dcp.save(state, checkpoint_id=directory, no_dist=True)
    torch.save(rest, directory / _METADATA_FILENAME)


def lightning_checkpoint(model: torch.nn.Module, hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict with the keys Lightning writes (weights, hyperparameters, loop state, an optimizer)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {
        "epoch": 1,
        "global_step": 16,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "hyper_parameters": hyper_parameters,
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "loops": {},
        "callbacks": {},
    }


def _save_from_every_rank(directory: Path, key: str) -> None:
    """Each rank of a gloo group holds its slice (dim 0) of every weight as a DTensor and saves it."""
    from digits import DigitsMLP
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = DigitsMLP(hidden=48)  # the same weights on every rank; each keeps only its shards
    full = model.state_dict()
    sharded = {name: distribute_tensor(t.detach(), mesh, [Shard(0)]) for name, t in full.items()}
    checkpoint = lightning_checkpoint(model, dict(model.hparams))
    checkpoint["state_dict"] = sharded
    checkpoint["optimizer_states"] = []
    state, rest = split_checkpoint(checkpoint, key)
    dcp.save(state, checkpoint_id=directory)
    if rank == 0:
        torch.save(rest, directory / _METADATA_FILENAME)
        torch.save(full, directory.parent / "reference_weights.pt")  # what the shards hold, whole
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    _save_from_every_rank(Path(sys.argv[1]), sys.argv[2])
