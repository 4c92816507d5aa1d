"""Which of several verified ONNX files runs fastest on this machine, measured side by side.

int8 has two passes that can both verify (static and dynamic quantisation), and which is
faster depends on the model and on the CPU: static quantises convolutions (resnet18: 2.9x the
float file here, where dynamic leaves them float), dynamic is faster on a TransformerEncoder
(1.6x against static's 1.4x at batch 16, measured here). So where the export makes both, it
times them at the two verified shapes, on the machine it runs on, and keeps the faster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_deploy.runtime.backends import runtime_module

__all__ = ["seconds_per_call"]

ROUNDS = 7
BLOCK_SECONDS = 0.03
WARM_UP_CALLS = 3


def seconds_per_call(
    paths: Sequence[Path],
    input_names: Sequence[str],
    output_names: Sequence[str],
    samples: Sequence[Sequence[np.ndarray]],
) -> list[float]:
    """Seconds per call of each ONNX file (CPU, ONNX Runtime's default threads), summed over ``samples``.

    ``samples`` are flat inputs (the two verified shapes). The files take turns in blocks of
    about 30 ms, seven rounds, after three warm-up calls each; per file and sample the fastest
    block's mean counts (noise on a shared machine only adds time: measured here, the same
    file's blocks differ by 20%, its fastest blocks by a few percent).
    """
    runners = [runtime_module("onnx").open_runner(str(path), input_names, output_names, "cpu") for path in paths]
    totals = [0.0] * len(runners)
    for leaves in samples:
        arrays = list(leaves)
        blocks = []
        for run in runners:
            for _ in range(WARM_UP_CALLS):
                start = time.perf_counter()
                run(arrays)
            blocks.append(max(1, round(BLOCK_SECONDS / max(time.perf_counter() - start, 1e-6))))
        best = [float("inf")] * len(runners)
        for _ in range(ROUNDS):
            for index, (run, block) in enumerate(zip(runners, blocks)):
                start = time.perf_counter()
                for _ in range(block):
                    run(arrays)
                best[index] = min(best[index], (time.perf_counter() - start) / block)
        totals = [total + seconds for total, seconds in zip(totals, best)]
    return totals
