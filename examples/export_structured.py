"""Main job: export a small model with structured I/O, verify it, print what was made.

Run: ``.venv/bin/python examples/export_structured.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lightning_deploy import export, load


@dataclasses.dataclass
class Scores:
    logits: torch.Tensor
    heads: dict
    extra: None = None


class Tagger(nn.Module):
    """Tokens and a padding mask in (a dict); a dataclass of logits and per-head outputs out."""

    def __init__(self, vocab: int = 100, width: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes))

    def forward(self, batch: dict) -> Scores:
        hidden = self.embed(batch["tokens"]) * batch["mask"].unsqueeze(-1)
        logits = self.mix(hidden)
        pooled = logits.sum(1) / batch["mask"].sum(1, keepdim=True).clamp(min=1)
        return Scores(logits, {"pooled": pooled, "best": [pooled.argmax(-1), pooled.amax(-1)]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("artifacts/example"), help="folder for the artifacts")
    out = parser.parse_args().out
    torch.manual_seed(0)
    model = Tagger()
    sample = ({"tokens": torch.randint(0, 100, (4, 12)), "mask": torch.ones(4, 12)},)
    manifest = export(
        model, sample, out, "tagger", formats=["torchscript", "onnx", "pt2"], dynamic_axes={"batch": {1: "seq"}}
    )

    table = Table(title=f"lightning-deploy: {out / 'tagger.export.json'}")
    for column in ("artifact", "method", "ok", "max abs diff", "checked input shapes", "sha256"):
        table.add_column(column, overflow="fold")
    for artifact in manifest["artifacts"]:
        table.add_row(
            artifact["path"],
            artifact["method"],
            "[green]yes[/]" if artifact["ok"] else f"[red]no[/]: {artifact['error']}",
            f"{artifact['max_abs_diff']:.2e}" if artifact["max_abs_diff"] is not None else "-",
            "\n".join(" ".join("x".join(map(str, leaf)) for leaf in check) for check in artifact["checked_shapes"]),
            (artifact["sha256"] or "-")[:12],
        )
    console = Console(width=max(110, Console().width))  # wide enough for the table in CI logs too
    console.print(table)

    runner = load(out / "tagger.onnx")
    tokens, mask = torch.randint(0, 100, (3, 20)), torch.ones(3, 20)
    result = runner({"tokens": tokens, "mask": mask})
    shape = tuple(result.logits.shape)
    heads = list(result.heads)
    console.print(f"load('tagger.onnx') at batch 3, seq 20 -> {type(result).__name__}(logits {shape}, heads {heads})")
    brief = {
        "ok": manifest["ok"],
        "inputs": {k: v for k, v in manifest["inputs"].items() if k != "schema"},
        "outputs": manifest["outputs"]["names"],
        "versions": manifest["versions"],
    }
    console.print("manifest (without the structure schemas):")
    console.print_json(json.dumps(brief))


if __name__ == "__main__":
    main()
