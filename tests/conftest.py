import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))  # the examples' models
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))  # the model zoo


@pytest.fixture(autouse=True)
def _quiet_torchscript_deprecation():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
