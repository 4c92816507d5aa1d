"""Which device an artifact runs on in ``load()``, decided before anything is opened.

Torch-free, so that ``load()`` of an ONNX artifact still needs neither torch nor Lightning:
what a machine has is asked through small callables (``torch.cuda`` for the torch runtimes,
ONNX Runtime's provider list for ONNX). The rule (docs/design.md, "Devices"): the device asked
for, else the artifact's recorded device when this machine has it, else the CPU; never
another device than asked, silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from lightning_deploy.errors import LoadError
from lightning_deploy.formats import FORMATS

__all__ = [
    "COMPILED_FORMATS",
    "CPU_FEATURES",
    "check_memory",
    "choose_device",
    "cpu_features",
    "cpu_flags",
    "cpu_name",
    "device_index",
    "normalise_device",
    "torch_has_device",
]

# Formats compiled for the device they were exported on: they run there and nowhere else.
COMPILED_FORMATS = tuple(fmt.name for fmt in FORMATS if fmt.compiled)
# The CPU flags that decide which low-precision artifacts can be made and how fast they run:
# VNNI for int8 (exact signed weights), avx512_bf16 or AMX for OpenVINO's bfloat16.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def normalise_device(device: str, owner: str = "load") -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``"cuda:0"`` is written ``"cuda"``); anything else raises.

    Raises:
        LoadError: for a device string that is neither, naming the argument.
    """
    match = _DEVICE.match(str(device).strip().lower())
    if match is None:
        raise LoadError(
            f"{owner}(device={device!r}): unknown device. HINT: use 'cpu', 'cuda' or 'cuda:N' (N the GPU's index)."
        )
    kind, index = match.groups()
    if kind == "cpu":
        return "cpu"
    return "cuda" if index in (None, "0") else f"cuda:{int(index)}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's feature flags as Linux lists them (``avx2``, ``avx512_vnni``, ``avx512_bf16``, ...).

    Empty where ``cpuinfo`` cannot be read (not Linux), so a caller makes its safe choice there.
    Neither onnxruntime nor numpy reports CPU features, and torch only names its kernels' level;
    the int8 weight choice, the benchmarks' machine line and the tests' skips need the flags.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name as Linux gives it (``AMD EPYC``), or None where ``cpuinfo`` cannot be read."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
    except OSError:
        return None
    return found.group(1) if found else None


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Those of :data:`CPU_FEATURES` this CPU has, comma-separated, for a table's or a test run's machine line."""
    flags = cpu_flags(cpuinfo)
    if not flags:
        return "CPU flags unknown"
    return ", ".join(f for f in CPU_FEATURES if f in flags) or "none of " + ", ".join(CPU_FEATURES)


def device_index(device: str) -> int:
    """The GPU index of ``"cuda"``/``"cuda:N"`` (0 for ``"cuda"``); -1 for the CPU."""
    return -1 if device == "cpu" else int(device.partition(":")[2] or 0)


def choose_device(
    requested: str | None,
    recorded: str | None,
    fmt: str,
    has_device: Callable[[str], bool],
    missing_hint: str,
) -> str:
    """The device ``fmt``'s artifact runs on.

    Args:
        requested: ``load(device=...)``; ``None`` for the default.
        recorded: the manifest entry's ``device`` (where it was exported and verified); ``None``
            for manifests written before devices were recorded (they were all CPU).
        fmt: the artifact's format (a compiled format runs only on its recorded device type).
        has_device: whether this machine can run the runtime on a device (``"cuda:1"``).
        missing_hint: what to do when a CUDA device is asked for and absent.

    Raises:
        LoadError: for an unknown device, a CUDA device this machine (or runtime) lacks, or a
            compiled artifact asked to run on another kind of device than it was compiled for.
    """
    recorded = normalise_device(recorded or "cpu", "manifest")
    if requested is None:
        device = recorded if recorded == "cpu" or has_device(recorded) else "cpu"
        if fmt in COMPILED_FORMATS and device != recorded:
            raise LoadError(
                f"This {fmt} artifact was compiled for {recorded}, which this machine lacks. HINT: {missing_hint}"
                f" or re-export the model on the CPU for a CPU package."
            )
        return device
    device = normalise_device(requested)
    if device != "cpu" and not has_device(device):
        raise LoadError(f"load(device={requested!r}): {device} is not available here. HINT: {missing_hint}")
    if fmt in COMPILED_FORMATS and _kind(device) != _kind(recorded):
        raise LoadError(
            f"load(device={requested!r}): this {fmt} artifact was compiled for {recorded} and runs only there."
            f" HINT: pass device={recorded!r}, or re-export the model on {_kind(device)} for a package of its own."
        )
    return device


def torch_has_device(device: str) -> bool:
    """Whether torch sees ``device`` (``"cuda:1"`` needs two GPUs); imports torch (torch runtimes only)."""
    import torch

    return device == "cpu" or (torch.cuda.is_available() and device_index(device) < torch.cuda.device_count())


def _kind(device: str) -> str:
    return device.partition(":")[0]


def check_memory(files: Sequence[Path], runtime: str, meminfo: Path = Path("/proc/meminfo")) -> None:
    """Raise ``LoadError`` where opening ``files`` on the CPU needs more memory than the machine has available.

    Every runtime here holds an artifact's weights in memory once it is open (measured: 1.00x
    to 1.13x of the files for TorchScript, ``.pt2`` and ONNX Runtime, benchmarks/big_models.py),
    so files bigger than the memory the kernel says is available (``MemAvailable``: free, plus
    caches it can drop) would end in an out-of-memory kill of the whole process: the training
    run at fit end, a server. A clear error instead, before the runtime reads a byte. Where
    ``/proc/meminfo`` is missing (not Linux), nothing is checked.
    """
    try:
        available = next(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                         if line.startswith("MemAvailable:"))  # fmt: skip
    except (OSError, StopIteration, ValueError, IndexError):
        return
    needed = sum(path.stat().st_size for path in files if path.is_file())
    if needed > available:
        raise LoadError(
            f"{files[0]}: opening it in {runtime} needs about {needed / 1e9:.2f} GB of memory (the size of its"
            f" files) and this machine has {available / 1e9:.2f} GB available. HINT: free memory (other models,"
            " other processes), or load it on a machine with more; the files are unchanged."
        )
