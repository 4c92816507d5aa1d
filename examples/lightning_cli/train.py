"""A complete LightningCLI project with ModelExport; the only change from plain LightningCLI is its name.

python examples/lightning_cli/train.py fit --config examples/lightning_cli/config.yaml
python examples/lightning_cli/train.py export --config examples/lightning_cli/config.yaml --ckpt_path BEST.ckpt
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # examples/digits.py

from digits import DigitsData, DigitsMLP

from lightning_deploy.lightning.lightning_cli import LightningDeployCLI

if __name__ == "__main__":
    LightningDeployCLI(DigitsMLP, DigitsData)
