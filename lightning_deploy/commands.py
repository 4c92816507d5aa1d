"""What each ``lightning-deploy`` command does, once ``cli.py`` parsed its arguments (``export``'s: ``lightning/``).

Each imports what it needs when it runs: ``--help``, ``show`` and ``run`` of an ONNX artifact
import neither torch nor Lightning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning_deploy.errors import CommandError

__all__ = ["COMMANDS"]


def _show(config: Any) -> int:
    from lightning_deploy.artifact.manifest import manifest_path, read_manifest
    from lightning_deploy.report import print_report

    path = manifest_path(config.path)
    manifest = read_manifest(path)
    print_report(manifest, path.parent)
    versions = manifest.get("versions", {})
    made_with = f"torch {versions.get('torch')}, onnxruntime {versions.get('onnxruntime')}"
    print(f"created {manifest.get('created')} with {made_with}")
    return 0 if manifest.get("ok") else 1


def _verify(config: Any) -> int:
    from lightning_deploy.errors import ConfigurationError, IntegrityError
    from lightning_deploy.report import print_verification
    from lightning_deploy.runtime.placement import normalise_device
    from lightning_deploy.verification.rerun import verify

    device = None if config.device is None else normalise_device(config.device, "--device")
    try:
        result = verify(config.path, config.formats, device, record=not config.no_record)
    except ConfigurationError as err:
        raise CommandError(str(err)) from None
    except IntegrityError as err:  # the samples were changed: a failed verification, not a usage mistake
        print(f"lightning-deploy verify: FAILED {err}", file=sys.stderr)
        return 1
    print_verification(result.manifest.name, result.host, result.artifacts, result.recorded if not config.no_record
                       else "not recorded (--no-record)")  # fmt: skip
    for line in result.failures:
        print(f"lightning-deploy verify: FAILED {line}", file=sys.stderr)
    return 0 if result.ok else 1


def _run(config: Any) -> int:
    import numpy as np

    from lightning_deploy.runtime.loading import load

    model = load(config.artifact, device=config.device)
    outputs = _run_on_file(model, Path(config.input))
    if config.output:
        np.savez(config.output, **{k: _numpy(v) for k, v in outputs.items()})
        print(f"saved {len(outputs)} outputs to {config.output}")
        return 0
    with np.printoptions(precision=5, threshold=20, edgeitems=3):
        for name, value in outputs.items():
            array = _numpy(value)
            print(f"{name}  shape={list(array.shape)} dtype={array.dtype}\n{array}")
    return 0


def _run_on_file(model: Any, path: Path) -> dict[str, Any]:
    import numpy as np

    if not path.is_file():
        raise CommandError(f"--input {path}: no such file.")
    names = model.input_names
    if path.suffix == ".npz":
        with np.load(path) as data:
            return model.run_leaves(dict(data))
    if path.suffix == ".npy":
        if len(names) != 1:
            raise CommandError(
                f"--input {path}: the model takes {len(names)} inputs {names}; use an .npz keyed by them."
            )
        return model.run_leaves({names[0]: np.load(path)})
    if path.suffix == ".pt":
        import torch

        sample = torch.load(path, map_location="cpu", weights_only=True)  # tensors and containers; never code
        if isinstance(sample, dict) and set(sample) == set(names):
            return model.run_leaves(sample)
        if isinstance(sample, tuple):
            return model.outputs_by_name(*sample)
        return model.outputs_by_name(**sample) if isinstance(sample, dict) else model.outputs_by_name(sample)
    raise CommandError(f"--input {path}: use .npz, .npy or .pt.")


def _serve(config: Any) -> int:
    ray = config.engine == "ray"
    if not ray and (config.address or config.replicas != 1):
        raise CommandError("--address and --replicas are for --engine ray. HINT: --workers sets LitServe's processes.")
    common = {"format": config.format, "device": config.device, "max_batch_size": config.max_batch_size,
              "verify": not config.no_verify, "name": config.name}  # fmt: skip
    try:  # the optional packages: a missing one is named with its extra
        if ray:
            from lightning_deploy.serving.guards import api_key_from
            from lightning_deploy.serving.ray import run
        else:
            from lightning_deploy.serving.server import serve
    except ImportError as err:
        extra = "ray" if ray else "serve"
        raise CommandError(f"serve needs {err.name}. HINT: pip install 'lightning-deploy[{extra}]'.") from None
    litserve_only = {"workers": config.workers, "timeout": config.timeout, "max_payload_size": config.max_payload_size,
                     "log_level": config.log_level, "access_log": False if config.no_access_log else None}  # fmt: skip
    given = {name: value for name, value in litserve_only.items() if value is not None}
    if ray:
        if given:
            flags = ["--no-access-log" if n == "access_log" else "--" + n.replace("_", "-") for n in given]
            raise CommandError(
                f"{', '.join(flags)}: LitServe's, not Ray Serve's. HINT: with --engine ray, scale with --replicas;"
                " Ray Serve's timeouts and logging are set in its config file (serve build, docs/scaling.md)."
            )
        run(config.path, config.address, config.host, config.port, config.replicas, **common,
            batch_wait_timeout_s=config.batch_timeout, api_key=api_key_from(config.api_key_env))  # fmt: skip
        return 0
    serve(config.path, port=config.port, host=config.host, batch_timeout=config.batch_timeout,
          api_key_env=config.api_key_env, **given, **common)  # fmt: skip
    return 0


def _predict(config: Any) -> int:
    from lightning_deploy.serving.batch_inference import predict

    try:
        written = predict(config.path, config.input, config.output, config.engine, config.batch_size, config.format,
                          config.device, address=config.address, actors=config.actors)  # fmt: skip
    except ModuleNotFoundError as err:  # pyarrow, or ray for --engine ray: optional packages
        extra = "ray" if config.engine == "ray" else "predict"
        raise CommandError(f"predict needs {err.name}. HINT: pip install 'lightning-deploy[{extra}]'.") from None
    print(f"wrote {written}")
    return 0


def _triton(config: Any) -> int:
    from lightning_deploy.serving.triton import write_model_repository

    folder = write_model_repository(
        config.path, config.repository, config.name, config.max_batch_size, config.format, config.overwrite
    )
    print(f"wrote {folder}:")
    print((folder / "config.pbtxt").read_text(), end="")
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "config.pbtxt"):
        print(f"  {file.relative_to(folder)}  {file.stat().st_size} bytes")
    return 0


def _numpy(value: Any) -> Any:
    from lightning_deploy.runtime.arrays import to_numpy

    return to_numpy(value)


COMMANDS = {"show": _show, "verify": _verify, "run": _run, "serve": _serve, "predict": _predict, "triton": _triton}
