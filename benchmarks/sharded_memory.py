"""Peak memory of exporting a sharded checkpoint directory (about 200 MB of weights in 4 shard files).

Run: ``.venv/bin/python benchmarks/sharded_memory.py [--doc docs/performance.md]`` (prints a
table; asserts nothing). A real four-process gloo group writes the directory in Lightning's
FSDP layout (each rank its dim-0 shards of every weight, ``meta.pt`` on rank zero). Then each
row is a fresh process: it imports everything the export needs (torch, Lightning, onnx,
onnxruntime, onnxscript) and, for the export rows, exports a tiny model of the same class
with the same formats (the exporters load libraries on first use); it reads its resident
memory (the baseline), and either consolidates the directory into a rebuilt model
(``checkpoints.rebuild``, what the export does; or Lightning's ``_load_distributed_checkpoint``
+ ``load_state_dict``, the obvious way, for comparison) or runs the whole ``lightning-deploy
export --ckpt_path DIR`` in-process. The figure is (peak ``ru_maxrss`` - baseline) / weights:
the model is built inside the measured span, so 1.0x is the floor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from perfdoc import argument_parser, publish
from torch import nn

HERE = Path(__file__).parent
WIDTH, DEPTH, RANKS = 3584, 4, 4  # 4 x 3584^2 float32 = 196 MiB of weights


class Wide(pl.LightningModule):
    """An MLP of ``depth`` square layers: weights of a few hundred MB, quick to run."""

    def __init__(self, width: int = WIDTH, depth: int = DEPTH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = nn.Sequential(*(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth)))
        self.example_input_array = torch.zeros(2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Activations through every layer."""
        return self.layers(x)


def save_sharded(directory: Path) -> None:
    """On each rank of a gloo group: this rank's dim-0 shards as DTensors, saved as Lightning's FSDP does."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from lightning.fabric.utilities.load import _METADATA_FILENAME
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    model = Wide()
    state = {name: distribute_tensor(t.detach(), mesh, [Shard(0)]) for name, t in model.state_dict().items()}
    dcp.save({"model": state}, checkpoint_id=directory)
    if dist.get_rank() == 0:
        meta = {"hyper_parameters": dict(model.hparams), "epoch": 0, "global_step": 1}
        torch.save(meta, directory / _METADATA_FILENAME)
    dist.barrier()
    dist.destroy_process_group()


CHILD = """
import json, resource, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {here!r})
import torch, onnx, onnxruntime, onnxscript, lightning.pytorch
from lightning_deploy import cli, export
from lightning_deploy.lightning import checkpoints
from sharded_memory import Wide
torch.set_num_threads({threads})

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

mode, directory, warm = {mode!r}, {directory!r}, {warm!r}
if warm:
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        formats = [f.strip() for f in mode.strip("[]").split(",")]
        export(Wide(width=8, depth=1), torch.zeros(2, 8), folder, "tiny", formats=formats)
baseline = rss()
if mode == "rebuild":
    model = checkpoints.rebuild(Wide, directory)
elif mode == "lightning":
    from pathlib import Path
    from lightning.fabric.utilities.load import _load_distributed_checkpoint
    checkpoint = _load_distributed_checkpoint(Path(directory))
    model = Wide(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["model"])
else:
    status = cli.main(["export", "--ckpt_path", directory, "--model", "sharded_memory.Wide", "--formats", mode])
    assert status == 0, status
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"baseline": baseline, "peak": peak}}))
"""

ROWS = [  # (what the child does, whether it warms up first, the row's name)
    ("rebuild", False, "consolidate: checkpoints.rebuild (what the export does)"),
    ("lightning", False, "consolidate: Lightning's _load_distributed_checkpoint + load_state_dict"),
    ("[torchscript, onnx]", True, "lightning-deploy export, formats torchscript + onnx (the default)"),
    ("[onnx]", True, "lightning-deploy export, onnx"),
    ("[torchscript]", True, "lightning-deploy export, torchscript"),
    ("[pt2]", True, "lightning-deploy export, pt2"),
    ("[torchscript, onnx]", False, "lightning-deploy export, the default, without the warm-up"),
]


def main() -> None:
    """Write the directory with four ranks, then measure every row in a fresh process; print the table."""
    parser = argument_parser(__doc__)
    args = parser.parse_args()
    weights = sum(p.numel() * p.element_size() for p in Wide().parameters())
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder) / "epoch=0-step=1.ckpt"
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
                        str(Path(__file__).resolve()), "--save", str(directory)], check=True, env=env,
                       capture_output=True)  # fmt: skip
        shards = sorted(p.name for p in directory.glob("*.distcp"))
        rows = []
        for mode, warm, what in ROWS:
            code = CHILD.format(here=str(HERE), mode=mode, directory=str(directory), threads=args.threads, warm=warm)
            done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                  cwd=folder, env=env)  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            above = result["peak"] - result["baseline"]
            mib = [f"{value / 2**20:.0f}" for value in (weights, result["baseline"], result["peak"], above)]
            rows.append([what, *mib, f"{above / weights:.2f}x"])
    publish(
        "sharded-memory",
        "Memory: a sharded checkpoint directory consolidated and exported, above the process baseline",
        ["what", "weights MiB", "baseline MiB", "peak MiB", "above MiB", "above / weights"],
        rows,
        [f"The directory: {len(shards)} shard files ({', '.join(shards)}) written by a {RANKS}-process gloo group"
         f" (DTensors sharded along dim 0, Lightning's FSDP layout), an MLP of {DEPTH} layers {WIDTH}x{WIDTH}.",
         "Baseline: a fresh process with torch, Lightning, onnx, onnxruntime, onnxscript and lightning_deploy"
         " imported and, for the export rows, a warm-up export of the same class at width 8 with the same formats"
         " (what the exporters load on first use, the ONNX exporter's function library above all, is then in the"
         " baseline, not counted per weight; the last row shows it counted). Peak: ru_maxrss after the row's"
         " work. The model is built inside the span (1.0x is the floor).",
         "The export rows include verification (each artifact reloaded in its runtime and run at two shapes)."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--save"]:
        save_sharded(Path(sys.argv[2]))
    else:
        main()
