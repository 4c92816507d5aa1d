"""``lightning-deploy``: export a finished run's checkpoint, show a manifest, run an artifact.

    lightning-deploy export --ckpt_path PATH [--model CLASS_PATH] [--config YAML] [ModelExport options]
    lightning-deploy show PATH
    lightning-deploy run ARTIFACT --input FILE [--output FILE.npz]
    lightning-deploy serve PATH [--port 8000] [--device D] [--max-batch-size N] [--workers N]
    lightning-deploy triton PATH --repository DIR [--name NAME] [--max-batch-size N]

The parser is jsonargparse's, built from ``ModelExport``'s signature and docstring, so every
option is validated from its type hint and has the callback's own help text. Failures print
one line naming the problem and the fix, and exit with status 2 (1 when an artifact failed).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from lightning_deploy.errors import LightningDeployError
from lightning_deploy.manifest import manifest_path, read_manifest
from lightning_deploy.report import print_report

__all__ = ["main"]

_CALLBACK_ONLY = {"input_sample"}  # Python objects, not command-line values


class CommandError(LightningDeployError):
    """A command-line mistake; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-deploy`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:  # the one command whose parser needs jsonargparse
            return _export(_parse_export(argv[1:]), argv)
        config = _parser().parse_args(argv)
        return _COMMANDS[config.command](config, argv)
    except (LightningDeployError, OSError) as err:
        _fail(str(err))
    except Exception as err:  # noqa: BLE001 - any other failure becomes one line, not a traceback
        _fail(f"{type(err).__name__}: {err}")
    return 2


def _fail(message: str) -> None:
    """Print ``message`` as one line (jsonargparse's messages span several)."""
    line = " ".join(message.split())
    print(f"lightning-deploy: error: {line[:600]}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake raised as :class:`CommandError` (one line, naming the help) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise the parse error; ``main`` prints it as one line."""
        raise CommandError(f"{message}. HINT: see '{self.prog} --help'.")


def _parser() -> argparse.ArgumentParser:
    """Every command but ``export``'s options: plain argparse, so that ``--help``, ``show`` and ``run`` answer at once.

    Nothing here imports torch, Lightning or jsonargparse; ``export`` has its own parser (below).
    """
    parser = _Parser(prog="lightning-deploy", description=_DESCRIPTION, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    commands.add_parser(
        "export", add_help=False, help="export a checkpoint of a finished run ('lightning-deploy export --help')"
    )

    show = commands.add_parser("show", help="print a manifest as a table", description="Print a manifest as a table.")
    show.add_argument("path", help="a manifest (STEM.export.json) or one of its artifacts")

    run = commands.add_parser(
        "run", help="run an artifact on inputs from a file", description=_RUN_DESCRIPTION, allow_abbrev=False
    )
    run.add_argument("artifact", help="STEM.onnx, STEM.torchscript.pt, STEM.pt2, STEM.aoti.pt2 or STEM.export.json")
    run.add_argument("--device", help="cpu, cuda or cuda:N (default: the device the manifest records, if present here)")
    run.add_argument(
        "--input",
        required=True,
        help=".npz keyed by input leaf names (batch.x), .npy for a single input, or .pt holding either such a dict"
        " or a sample by example_input_array's convention",
    )
    run.add_argument("--output", help="save the outputs, keyed by output leaf names, to this .npz instead of printing")

    serve = commands.add_parser(
        "serve", help="serve an artifact over HTTP (needs litserve)", description=_SERVE_DESCRIPTION, allow_abbrev=False
    )
    serve.add_argument("path", help="an artifact or its manifest (STEM.export.json)")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on (default: 8000)")
    serve.add_argument("--host", default="0.0.0.0", help="0.0.0.0 (all interfaces), 127.0.0.1 (this machine) or ::")
    serve.add_argument("--device", help="cpu, cuda or cuda:N (default: the device the manifest records, if present)")
    serve.add_argument("--format", help="with a manifest, which artifact to serve (default: the one load() picks)")
    serve.add_argument(
        "--max-batch-size",
        type=int,
        default=1,
        help="above 1, stack up to this many concurrent requests along dim 0 (the model's dynamic batch)",
    )
    serve.add_argument(
        "--batch-timeout", type=float, default=0.0, help="seconds to wait for a batch to fill (default: no wait)"
    )
    serve.add_argument("--workers", type=int, default=1, help="inference worker processes, each with the model")

    triton = commands.add_parser(
        "triton", help="write a Triton model repository entry", description=_TRITON_DESCRIPTION, allow_abbrev=False
    )
    triton.add_argument("path", help="an ONNX or TorchScript artifact, or its manifest (its ONNX artifact is used)")
    triton.add_argument("--repository", required=True, help="the model repository folder; NAME/ is written in it")
    triton.add_argument("--name", help="the model's name in Triton (default: the artifact's stem)")
    triton.add_argument(
        "--max-batch-size",
        type=int,
        help="Triton's max_batch_size (default: 8 where dim 0 of every input is the dynamic batch, else 0)",
    )
    triton.add_argument("--format", help="with a manifest, which artifact (onnx, torchscript, ...)")
    triton.add_argument("--overwrite", action="store_true", help="replace an existing NAME/ in the repository")
    return parser


_DESCRIPTION = "Verified deployable artifacts from Lightning checkpoints: export, show, run, serve, triton."
_RUN_DESCRIPTION = "Run an artifact through load() and print or save its outputs."
_SERVE_DESCRIPTION = "Serve an artifact over HTTP with LitServe: POST /predict (JSON or .npz), GET /health."
_TRITON_DESCRIPTION = "Write a Triton Inference Server model repository entry for an ONNX or TorchScript artifact."


def _parse_export(argv: list[str]) -> Any:
    """``export``'s options, parsed by jsonargparse from ``ModelExport``'s signature read from its source."""
    from jsonargparse import ArgumentError

    try:
        return _export_parser().parse_args(argv)
    except ArgumentError as err:
        raise CommandError(f"{err} HINT: see 'lightning-deploy export --help'.") from None


def _export_parser() -> Any:
    """The parser of ``export`` (jsonargparse): the checkpoint options, then ``ModelExport``'s own."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="lightning-deploy export",
        description="Export a checkpoint of a finished run, verified.",
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export; artifacts are written beside it")
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="read the checkpoint with torch.load(weights_only=False): only for a file you trust, since unpickling"
        " can run code (default: weights_only=True, which a Lightning checkpoint of tensors and plain values passes)",
    )
    parser.add_argument(
        "--model",
        help="class path of the LightningModule (package.module.Class); default: the class the checkpoint records",
    )
    parser.add_argument(
        "--config",
        help="the LightningCLI YAML that trained the model: its model init_args and its ModelExport settings are used;"
        " options given here override them",
    )
    parser.add_function_arguments(model_export_signature(), None, skip=_CALLBACK_ONLY)
    return parser


def help_texts() -> dict[str, str]:
    """Every command's ``--help``, keyed by the command line that prints it (for the reference page)."""
    parser = _parser()
    texts = {"lightning-deploy": parser.format_help()}
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no API
    for name, command in commands.choices.items():
        help_text = _export_parser().format_help() if name == "export" else command.format_help()
        texts[f"lightning-deploy {name}"] = help_text
    return texts


def model_export_signature() -> Callable[..., None]:
    """A stand-in with ``ModelExport.__init__``'s parameters and ``ModelExport``'s docstring, made from its source.

    Importing the callback imports Lightning and torch (seconds); reading its source with
    ``ast`` takes milliseconds, and the source stays the one place the options are written.
    Its annotations use only ``typing`` names, evaluated here; ``tests/test_cli.py`` checks
    that the stand-in's signature is the callback's.
    """
    spec = importlib.util.find_spec("lightning_deploy.callback")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelExport")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    arguments = ast.arguments(
        posonlyargs=[], args=init.args.args[1:], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
        defaults=init.args.defaults,
    )  # fmt: skip
    stand_in = ast.FunctionDef(name="ModelExport", args=arguments, body=[ast.Pass()], decorator_list=[], returns=None)
    namespace: dict[str, Any] = {"__name__": __name__, "Any": Any, "Literal": Literal, "Sequence": Sequence}
    exec(compile(ast.fix_missing_locations(ast.Module([stand_in], [])), spec.origin, "exec"), namespace)
    function = namespace["ModelExport"]
    function.__doc__ = ast.get_docstring(cls)
    return function


def _export(config: Any, argv: list[str]) -> int:
    from lightning_deploy.callback import ModelExport

    ckpt = Path(config.ckpt_path)
    if not ckpt.exists():
        raise CommandError(
            f"--ckpt_path {ckpt}: no such file or directory. HINT: pass a .ckpt file or a sharded checkpoint directory."
        )
    yaml_model, yaml_export = _read_config(config.config) if config.config else ({}, {})
    given = {k: v for k, v in config.items() if k in _option_names() and _given(k, argv)}
    callback = ModelExport(**{**yaml_export, **given})
    model = _build_model(ckpt, config.model, yaml_model, config.trust_checkpoint)
    datamodule = _build_datamodule(config.config) if config.config and callback.check_batches else None
    manifest = callback.export_checkpoint(model, str(ckpt), holds_weights=True, datamodule=datamodule)
    return 0 if manifest["ok"] else 1


@functools.cache
def _option_names() -> frozenset[str]:
    """ModelExport's command-line options (its signature, less the Python-only arguments)."""
    from lightning_deploy.callback import ModelExport

    return frozenset(inspect.signature(ModelExport).parameters) - _CALLBACK_ONLY


def _given(name: str, argv: list[str]) -> bool:
    """Whether ``--name`` was typed, so that only typed options override the YAML's."""
    return any(token == f"--{name}" or token.startswith(f"--{name}=") for token in argv)


def _read_config(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The YAML's ``model`` section and its ``lightning_deploy.ModelExport`` init_args."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CommandError(f"--config {path}: no such file.") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        raise CommandError(f"--config {path}: not valid YAML ({where}). HINT: check the indentation there.") from None
    if not isinstance(data, dict):
        raise CommandError(f"--config {path}: expected a LightningCLI config (a mapping with model/trainer keys).")
    callbacks = (data.get("trainer") or {}).get("callbacks") or []
    exports = [c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).endswith("ModelExport")]
    init_args = (exports[0].get("init_args") or {}) if exports else {}
    unknown = sorted(set(init_args) - _option_names())
    if unknown:
        guesses = {k: difflib.get_close_matches(k, _option_names(), n=1) for k in unknown}
        meant = ", ".join(f"{k!r} (did you mean {g[0]!r}?)" if g else repr(k) for k, g in guesses.items())
        raise CommandError(
            f"--config {path}: ModelExport init_args has unknown key(s) {meant}."
            f" HINT: valid keys are {sorted(_option_names())}."
        )
    return data.get("model") or {}, init_args


def _build_model(ckpt: Path, class_path: str | None, yaml_model: dict[str, Any], trusted: bool = False) -> Any:
    """The LightningModule of ``ckpt`` (file or sharded directory): its class, hyperparameters, YAML init_args."""
    from lightning_deploy.checkpoints import is_sharded, read_checkpoint_meta, rebuild

    checkpoint = read_checkpoint_meta(ckpt, trusted)
    if not is_sharded(ckpt) and "state_dict" not in checkpoint:
        raise CommandError(f"--ckpt_path {ckpt}: not a Lightning checkpoint (no state_dict).")
    class_path = class_path or yaml_model.get("class_path") or checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not class_path:
        raise CommandError(
            f"{ckpt.name} does not record its LightningModule class. HINT: pass --model package.module.ClassName."
        )
    cls = _import(class_path)
    init_args = yaml_model.get("init_args", {}) if "class_path" in yaml_model else yaml_model
    try:
        return rebuild(cls, ckpt, trusted, **init_args)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CommandError(
            f"--model {class_path} does not match the checkpoint's weights ({detail})."
            " HINT: pass the class that trained this checkpoint."
        ) from None
    except TypeError as err:
        raise CommandError(
            f"cannot build {class_path} from the checkpoint: {err}. HINT: pass --config with the training YAML,"
            " whose model init_args fill in what the checkpoint does not record."
        ) from None


def _build_datamodule(path: str) -> Any:
    """The YAML's datamodule where its ``data`` section names a ``class_path`` (the check batches' source), else None.

    A ``data`` section without ``class_path`` belongs to a LightningCLI script that fixes the
    class itself; its ``export`` subcommand passes the datamodule instead.
    """
    import yaml

    data = (yaml.safe_load(Path(path).read_text()) or {}).get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        return None
    return _import(data["class_path"], "data.class_path")(**(data.get("init_args") or {}))


def _import(class_path: str, option: str = "--model") -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise CommandError(
            f"{option} {class_path}: cannot import it. HINT: give package.module.ClassName, importable from here."
        ) from None


def _show(config: Any, argv: list[str]) -> int:
    path = manifest_path(config.path)
    manifest = read_manifest(path)
    print_report(manifest, path.parent)
    versions = manifest.get("versions", {})
    made_with = f"torch {versions.get('torch')}, onnxruntime {versions.get('onnxruntime')}"
    print(f"created {manifest.get('created')} with {made_with}")
    return 0 if manifest.get("ok") else 1


def _run(config: Any, argv: list[str]) -> int:
    import numpy as np

    from lightning_deploy.load import load

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


def _serve(config: Any, argv: list[str]) -> int:
    try:
        from lightning_deploy.serve import serve
    except ImportError as err:
        raise CommandError(f"serve needs {err.name}. HINT: pip install 'lightning-deploy[serve]'.") from None
    serve(
        config.path,
        port=config.port,
        host=config.host,
        device=config.device,
        format=config.format,
        max_batch_size=config.max_batch_size,
        batch_timeout=config.batch_timeout,
        workers=config.workers,
    )
    return 0


def _triton(config: Any, argv: list[str]) -> int:
    from lightning_deploy.triton import write_model_repository

    folder = write_model_repository(
        config.path, config.repository, config.name, config.max_batch_size, config.format, config.overwrite
    )
    print(f"wrote {folder}:")
    print((folder / "config.pbtxt").read_text(), end="")
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "config.pbtxt"):
        print(f"  {file.relative_to(folder)}  {file.stat().st_size} bytes")
    return 0


def _numpy(value: Any) -> Any:
    import numpy as np

    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


_COMMANDS = {"export": _export, "show": _show, "run": _run, "serve": _serve, "triton": _triton}

if __name__ == "__main__":
    raise SystemExit(main())
