"""What a long export is doing: one line per step with its time, on a terminal only.

Exporting a large model takes minutes (a capture, a save, a verification per format and
method, an AOTInductor compile); a user at a terminal sees each step start (rich's status
spinner) and end (a line with its seconds). Off where stderr is not a terminal (CI logs, a
pipe), unless ``LIGHTNING_DEPLOY_PROGRESS=1`` turns it on (``=0`` turns it off everywhere).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console

__all__ = ["StepLog"]


class StepLog:
    """Prints ``label ... N.NN s`` per step to stderr where enabled; does nothing otherwise."""

    def __init__(self, title: str) -> None:
        self.console = Console(stderr=True, highlight=False)
        wanted = os.environ.get("LIGHTNING_DEPLOY_PROGRESS")
        self.enabled = self.console.is_terminal if wanted in (None, "") else wanted == "1"
        self.title = title

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Show ``label`` while the step runs, then its time (or that it failed)."""
        if not self.enabled:
            yield
            return
        start, outcome = time.perf_counter(), "failed"
        status = self.console.status(f"{self.title}: {label} ...") if self.console.is_terminal else None
        try:
            with status or contextlib.nullcontext():
                yield
            outcome = "done"
        finally:
            seconds = time.perf_counter() - start
            self.console.print(f"{self.title}: {label} {outcome} in {seconds:.2f} s")
