"""Seconds per call, measured side by side: the export's timings and ``verify``'s on the machine it runs on.

Standard library only, so that a deployment machine without torch times its artifacts the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SLOWER", "seconds_per_call"]

# A derived ("faster") artifact is called slower than its source below this ratio of their speeds: the
# fastest-block timings of one file differ by a few percent between runs, so equal speeds stay unflagged.
SLOWER = 0.95

ROUNDS = 7
BLOCK_SECONDS = 0.03
WARM_UP_CALLS = 3


def seconds_per_call(calls: Sequence[Callable[[], Any]], rounds: int = ROUNDS) -> list[float]:
    """Seconds per call of each of ``calls``, taking turns in blocks of about 30 ms.

    After three warm-up calls each, the calls take turns in ``rounds`` rounds of one block
    each; per call the fastest block's mean counts (noise on a shared machine only adds
    time: measured here, the same file's blocks differ by 20%, its fastest blocks by a few
    percent). Taking turns spreads the machine's drift over all of them alike.
    """
    blocks = []
    for call in calls:
        for _ in range(WARM_UP_CALLS):
            start = time.perf_counter()
            call()
        blocks.append(max(1, round(BLOCK_SECONDS / max(time.perf_counter() - start, 1e-6))))
    best = [float("inf")] * len(calls)
    for _ in range(rounds):
        for index, (call, block) in enumerate(zip(calls, blocks)):
            start = time.perf_counter()
            for _ in range(block):
                call()
            best[index] = min(best[index], (time.perf_counter() - start) / block)
    return best
