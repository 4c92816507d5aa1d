"""The FSDP check: a real ``FSDPStrategy(state_dict_type="sharded")`` fit with ModelExport on a GPU.

Run on a CUDA machine from the repository root (``python tools/machines/gpu_fsdp_check.py``): trains
the examples' digits MLP with FSDP (one GPU, sharded checkpoints), then prints the best
checkpoint directory's files, the manifest (every artifact verified, its device) and each
artifact through ``load()`` against the checkpoint's weights consolidated on the CPU at a
batch the export never saw. Exits 1 if a check failed.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

FORMATS = ["torchscript", "onnx", "pt2"]


def main() -> None:
    """Fit with FSDP, export at fit end, check every artifact; exit 1 on a failed check."""
    import lightning.pytorch as pl
    from digits import DigitsData, DigitsMLP
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import FSDPStrategy

    from lightning_deploy import ModelExport, load
    from lightning_deploy.lightning.checkpoints import rebuild

    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        sys.exit("gpu_fsdp_check: torch sees no CUDA device; run this on a GPU machine.")
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        checkpoints = ModelCheckpoint(dirpath=folder, monitor="val_loss")
        callback = ModelExport(formats=FORMATS)
        trainer = pl.Trainer(accelerator="gpu", devices=1, strategy=FSDPStrategy(state_dict_type="sharded"),
                             max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[checkpoints, callback])  # fmt: skip
        trainer.fit(DigitsMLP(), datamodule=DigitsData())
        best = Path(checkpoints.best_model_path)
        print(f"best checkpoint: {best.name} is_dir={best.is_dir()} files={sorted(p.name for p in best.iterdir())}"
              if best.is_dir() else f"best checkpoint: {best.name} (a file)")  # fmt: skip
        print(f"folder: {sorted(p.name for p in Path(folder).iterdir())}")
        for a in callback.manifest["artifacts"]:
            print(f"  {a['format']:<12} ok={a['ok']} device={a.get('device')} diff={a['max_abs_diff']}"
                  f" shapes={a['checked_shapes']} error={(a['error'] or '')[:300]}")  # fmt: skip
            if not a["ok"]:
                failures.append(a["format"])
        reference = rebuild(DigitsMLP, best).eval()
        x = torch.rand(9, 64)
        want = reference(x)
        for fmt in FORMATS:
            try:
                got = load(Path(folder) / f"{best.stem}.export.json", format=fmt, device="cpu")(x)
                diff = (got - want).abs().max().item()
            except Exception as err:  # noqa: BLE001 - printed as a failed check
                diff, got = float("inf"), err
            print(f"  load({fmt}, device='cpu') at batch 9 vs the consolidated checkpoint: max diff {diff:.2e}")
            if not diff < 1e-4:
                failures.append(f"load {fmt}")
    print(f"gpu_fsdp_check: {len(failures)} failed check(s) {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
