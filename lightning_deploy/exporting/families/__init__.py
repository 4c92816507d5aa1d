"""Model families whose code an export needs help with, consulted by the engine without naming one.

A family is a module here with a context manager ``support(module)``: while the export runs it
registers the family's structures with ``torch.utils._pytree``, patches what a trace would bake
in, and yields the module to export (the module itself where the family's package is not
imported: this package never imports one). Adding a family is its module and its name in
:data:`FAMILIES`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from torch import nn

__all__ = ["FAMILIES", "supported"]

FAMILIES = ("detectron2",)


@contextlib.contextmanager
def supported(module: nn.Module) -> Iterator[nn.Module]:
    """Every family's support entered around the export of ``module``; yields the module to export."""
    with contextlib.ExitStack() as stack:
        for name in FAMILIES:
            family = importlib.import_module(f"{__name__}.{name}")
            module = stack.enter_context(family.support(module))
        yield module
