"""This machine, as a ``verify`` record names it: the CPU, its flags, the runtimes' versions, and a fingerprint.

``verify`` writes one record per host into the manifest's ``verified_on``; ``load(manifest)``
finds this host's record by :func:`fingerprint` and ranks the artifacts by the timings taken
here. Two machines share a fingerprint when the things that decide an artifact's numbers and
speed agree: the CPU model, its instruction-set flags, the core count and the runtimes' versions.
Standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from typing import Any

from lightning_deploy.runtime.placement import CPU_FEATURES, cpu_flags, cpu_name

__all__ = ["RUNTIME_PACKAGES", "describe_host", "fingerprint"]

# The packages whose version changes what an artifact computes or how fast: every runtime a format names.
RUNTIME_PACKAGES = ("lightning-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "executorch")


@functools.cache
def describe_host() -> dict[str, Any]:
    """This machine: CPU model, its flags of :data:`~lightning_deploy.runtime.placement.CPU_FEATURES`, cores, runtimes.

    Read once per process (``importlib.metadata`` takes tens of milliseconds).
    """
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    flags = cpu_flags()
    described = {
        "cpu": cpu_name() or platform.processor() or platform.machine(),
        "flags": [f for f in CPU_FEATURES if f in flags],
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
    }
    described["fingerprint"] = fingerprint(described)
    return described


def fingerprint(host: dict[str, Any] | None = None) -> str:
    """A short hash of what makes two hosts' results comparable (this one's by default)."""
    host = host if host is not None else describe_host()
    key = [host.get(k) for k in ("cpu", "flags", "cores", "machine", "versions")]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
