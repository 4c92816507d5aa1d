"""How far a detectron2 model's own outputs move when its input moves by rounding, against an artifact's.

Run: ``.venv/bin/python tools/docs/detectron2_noise.py [--model pointrend] [--route TracingAdapter]``
(prints; asserts nothing). Exports the model at 256x384 (TorchScript and ONNX) as
``detectron2_table.py`` does, then at a new image (232x344) compares with eager: each
artifact's outputs, and eager's own at the same image times (1 + 1e-6 noise), about the size
of the rounding by which ONNX Runtime's kernels differ from torch's. Where eager moves as far
as the ONNX file does, the mismatch is the model's sensitivity, not the export's (docs/detectron2.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from detectron2_table import exportable
from detectron2_zoo import build, detectron2_root, image

from lightning_deploy import export, load
from lightning_deploy.exporting.adapters import flatten_tree
from lightning_deploy.exporting.families import detectron2 as support
from lightning_deploy.verification.compare import named_leaves


def main() -> None:
    """Export, then print each float leaf's largest difference from eager: the artifacts', and eager's own."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pointrend")
    parser.add_argument("--route", default="TracingAdapter", choices=["model", "TracingAdapter"])
    args = parser.parse_args()
    module, sample, axes = exportable(build(args.model, detectron2_root()), args.route, image(256, 384))
    with tempfile.TemporaryDirectory(prefix="detectron2-noise-") as scratch:  # the artifacts go with it
        _compare(module, sample, axes, Path(scratch), args)


def _compare(module: torch.nn.Module, sample: object, axes: dict, folder: Path, args: argparse.Namespace) -> None:
    """Export into ``folder``, then print each artifact's and nudged eager's differences from eager."""
    manifest = export(module, sample, folder, args.model, formats=["torchscript", "onnx"], dynamic_batch=False,
                      dynamic_axes=axes)  # fmt: skip
    picture = image(232, 344, 12)
    arguments = (picture,) if args.route == "TracingAdapter" else ([{"image": picture}],)
    nudged = picture * (1 + 1e-6 * torch.randn(picture.shape, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad(), support.support(module) as prepared:
        eager = _leaves(prepared(*arguments), module)
        moved = _leaves(prepared(*((nudged,) if args.route == "TracingAdapter" else ([{"image": nudged}],))), module)
    outputs = {"eager at the image x (1 + 1e-6 noise)": moved}
    for entry in manifest["artifacts"]:
        runner = load(folder / f"{args.model}.export.json", format=entry["format"], verified_only=False)
        outputs[f"{entry['format']} (verified: {entry['ok']})"] = named_leaves(runner(*arguments), "out")
    for what, leaves in outputs.items():
        for name, want in eager.items():
            got = torch.as_tensor(leaves[name])
            if got.shape != want.shape or not want.is_floating_point():
                continue
            diff = (got - want).abs()
            print(f"{what:42} {name:40} max abs diff {float(diff.max()):.2e}, {int((diff > 1e-4).sum())} values > 1e-4")


def _leaves(output: object, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    with support.support(module):
        tree, leaves = flatten_tree(output, "out", "output", ValueError)
    return dict(zip(tree.names, leaves))


if __name__ == "__main__":
    main()
