"""The int8 and bf16 artifacts on real data: scikit-learn's digits, accuracy deltas and speed-ups over float32.

Run: ``.venv/bin/python benchmarks/int8_digits.py [--doc docs/performance.md]`` (prints a table;
asserts nothing). The examples' digits MLP trains for 30 epochs with ``ModelCheckpoint`` on
``val_acc`` and ``ModelExport(formats=["onnx", "onnx-int8", "openvino", "openvino-bf16"])``;
the accuracy deltas are the ones the callback measured on the validation loader and wrote
into the manifest. Then the four files are timed through ``load()`` at batch 1 and on the
whole validation set (397 digits), one after the other.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from perfdoc import NOT_HERE, argument_parser, publish, unavailable

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from digits import DigitsData, DigitsMLP

from lightning_deploy import ModelExport, load

FORMATS = ["onnx", "onnx-int8", "openvino", "openvino-bf16"]
NOT_MADE = unavailable(FORMATS)  # openvino-bf16 on a CPU without bfloat16 arithmetic: its cells say so


def _ms(seconds: list[float] | None) -> str:
    return f"{statistics.median(seconds) * 1e3:.4f}" if seconds else NOT_HERE


def _speedup(slow: list[float] | None, fast: list[float] | None) -> str:
    return f"{statistics.median(slow) / statistics.median(fast):.2f}x" if slow and fast else NOT_HERE


def main() -> None:
    """Train, export, read the accuracy from the manifest, time both artifacts."""
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    data = DigitsData()
    made = [fmt for fmt in FORMATS if fmt not in NOT_MADE]
    with tempfile.TemporaryDirectory() as root:
        checkpoint = ModelCheckpoint(dirpath=root, monitor="val_acc", mode="max")
        trainer = pl.Trainer(default_root_dir=root, max_epochs=30, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[checkpoint, ModelExport(formats=made)])  # fmt: skip
        trainer.fit(DigitsMLP(), datamodule=data)
        manifest_path = Path(checkpoint.best_model_path).with_suffix(".export.json")
        artifacts = {a["format"]: a for a in json.loads(manifest_path.read_text())["artifacts"]}
        models = {fmt: load(manifest_path, format=fmt, threads=args.threads if "onnx" in fmt else None)
                  for fmt in made}  # fmt: skip
        pixels = torch.stack([x for x, _ in data.val]).numpy()
        rows = []
        for batch in (1, len(pixels)):
            times: dict[str, list[float]] = {fmt: [] for fmt in models}
            for fmt, model in models.items():  # one after the other: ORT's spinning threads would skew interleaving
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    model(pixels[:batch])
                    times[fmt].append(time.perf_counter() - start)
            onnx, int8, f32, bf16 = (times.get(f) for f in FORMATS)
            rows.append([str(batch), _ms(onnx), _ms(int8), _speedup(onnx, int8), _ms(f32), _ms(bf16),
                         _speedup(f32, bf16)])  # fmt: skip
    accuracy = artifacts["onnx-int8"]["accuracy"]
    tried = ", ".join(f"{a.get('variant')} {'ok' if a['ok'] else 'failed'}" for a in artifacts["onnx-int8"]["attempts"])
    rel_diff = {fmt: artifacts[fmt]["max_rel_diff"] for fmt in artifacts}
    publish(
        "int8",
        "int8 and bf16 on scikit-learn's digits (MLP 64-64-10): accuracy deltas and speed through load()",
        ["batch", "float ONNX ms", "int8 ONNX ms", "int8 speed-up", "OpenVINO f32 ms", "OpenVINO bf16 ms",
         "bf16 speed-up"],
        rows,
        [f"Top-1 accuracy on the {accuracy['samples']} validation digits, measured by ModelExport at fit end:"
         f" checkpoint {accuracy['eager']:.4f}, int8 artifact {accuracy['artifact']:.4f},"
         f" delta {accuracy['delta']:+.4f}. The int8 file: {artifacts['onnx-int8']['derived']['pass']}"
         f" (attempts: {tried}). {_bf16_note(artifacts)}",
         f"Verification, largest difference relative to each output's scale: float ONNX {rel_diff['onnx']:.1e},"
         f" int8 {rel_diff['onnx-int8']:.1e} (its tolerance: rtol {artifacts['onnx-int8']['tolerance']['rtol']})"
         + (f", bf16 {rel_diff['openvino-bf16']:.1e} (rtol {artifacts['openvino-bf16']['tolerance']['rtol']})."
            if "openvino-bf16" in artifacts else "."),
         f"int8 weights: {artifacts['onnx-int8']['derived']['weights']}; its speed depends on VNNI, bf16's on"
         " avx512_bf16 or AMX (the machine line names this CPU's flags).",
         f"Median of {args.repeats} calls each, one artifact after the other; {args.threads} ONNX Runtime"
         " threads, OpenVINO's default (one per core). The runtime table above has int8 on the larger models."],
        args.doc,
    )  # fmt: skip


def _bf16_note(artifacts: dict[str, dict]) -> str:
    """bf16's accuracy delta, or why this machine made no bf16 artifact."""
    if "openvino-bf16" not in artifacts:
        return f"bf16 (openvino-bf16) not made on this machine: ModelExport refuses it, {NOT_MADE['openvino-bf16']}"
    bf16 = artifacts["openvino-bf16"]["accuracy"]
    return f"bf16 (openvino-bf16): {bf16['artifact']:.4f} against {bf16['eager']:.4f}, delta {bf16['delta']:+.4f}."


if __name__ == "__main__":
    main()
