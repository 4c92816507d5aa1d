"""What this machine can do, for the tests that need a feature: skips that name the reason, the run's header.

The machines CI runs on differ (some CPUs have no AVX-512, so no VNNI or bf16). A test that
needs a feature asks the product's own detection, so it skips exactly where the product refuses
or chooses otherwise: OpenVINO's CPU capabilities for bf16 (``has_bf16``), Linux's flags for
VNNI (``vnni_flag``), torch's compiler search for AOTInductor. Where the feature is missing,
the refusal is tested for real instead.
"""

from __future__ import annotations

import os
import platform

import pytest

from lightning_deploy.exporting.options import _no_cxx_compiler
from lightning_deploy.runtime.backends.openvino import cpu_capabilities, has_bf16
from lightning_deploy.runtime.placement import cpu_features, cpu_name

HAS_BF16 = has_bf16()
NO_BF16 = (
    "this CPU has no bfloat16 arithmetic: OpenVINO's CPU capabilities here are"
    f" {', '.join(cpu_capabilities())} (flags: {cpu_features()}); bf16 needs avx512_bf16 or AMX"
)
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)

NO_CXX = _no_cxx_compiler()  # torch's own compiler search, as ModelExport(formats=[..., "aoti"]) runs it
HAS_CXX = NO_CXX is None
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason=f"aoti compiles C++, and torch finds no compiler here: {NO_CXX}")


def describe() -> str:
    """The CPU, its cores, the flags that decide int8 and bf16, and OpenVINO's view: pytest's header line."""
    model = cpu_name() or platform.processor() or platform.machine()
    return (
        f"CPU: {model}, {os.cpu_count()} cores; flags: {cpu_features()};"
        f" OpenVINO CPU capabilities: {', '.join(cpu_capabilities())}"
    )
