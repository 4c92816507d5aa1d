"""``lightning-deploy export``: a finished run's checkpoint exported, with ``ModelExport``'s own options.

The parser is jsonargparse's, built from ``ModelExport``'s signature and docstring read from
its source (milliseconds, where importing the callback imports Lightning and torch), so every
option is validated from its type hint and has the callback's help text. The model is rebuilt
from the checkpoint (a file or a sharded directory), its class and hyperparameters, and the
training YAML where given; Lightning is imported only once an export runs.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from lightning_deploy.errors import CommandError
from lightning_deploy.formats import FormatName

__all__ = ["export_parser", "model_export_signature", "parse_export", "run_export"]

_CALLBACK_ONLY = {"input_sample"}  # Python objects, not command-line values
# The stand-in's name: jsonargparse looks it up on every enclosing package to name its import
# path, and ``lightning_deploy.ModelExport`` would import the callback, Lightning and torch (seconds).
_STAND_IN = "model_export_options"


def parse_export(argv: list[str]) -> Any:
    """``export``'s options, parsed by jsonargparse from ``ModelExport``'s signature read from its source."""
    from jsonargparse import ArgumentError

    try:
        return export_parser().parse_args(argv)
    except ArgumentError as err:
        raise CommandError(f"{err} HINT: see 'lightning-deploy export --help'.") from None


def export_parser() -> Any:
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
    parser.add_argument(
        "--mlflow_run_id",
        help="log the export (and --register_model's model) to this MLflow run, e.g. the run that trained it",
    )
    parser.add_argument("--mlflow_experiment", help="log the export to a new MLflow run of this experiment")
    parser.add_argument(
        "--mlflow_tracking_uri", help="the MLflow tracking server; default MLflow's own (MLFLOW_TRACKING_URI)"
    )
    return parser


def model_export_signature() -> Callable[..., None]:
    """A stand-in with ``ModelExport.__init__``'s parameters and ``ModelExport``'s docstring, made from its source.

    Importing the callback imports Lightning and torch (seconds); reading its source with
    ``ast`` takes milliseconds, and the source stays the one place the options are written.
    Its annotations use only ``typing`` names and ``formats.FormatName``, evaluated here; ``tests/test_cli.py`` checks
    that the stand-in's signature is the callback's.
    """
    spec = importlib.util.find_spec("lightning_deploy.lightning.callback")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelExport")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    arguments = ast.arguments(
        posonlyargs=[], args=init.args.args[1:], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
        defaults=init.args.defaults,
    )  # fmt: skip
    stand_in = ast.FunctionDef(name=_STAND_IN, args=arguments, body=[ast.Pass()], decorator_list=[], returns=None)
    namespace: dict[str, Any] = {"__name__": __name__, "Any": Any, "Literal": Literal, "Sequence": Sequence,
                                 "FormatName": FormatName}  # fmt: skip
    exec(compile(ast.fix_missing_locations(ast.Module([stand_in], [])), spec.origin, "exec"), namespace)
    function = namespace[_STAND_IN]
    function.__doc__ = ast.get_docstring(cls)
    return function


def run_export(config: Any, argv: list[str]) -> int:
    """Export the checkpoint as ``config`` says; the exit status (1 when an artifact failed)."""
    from lightning_deploy.lightning.callback import ModelExport

    ckpt = Path(config.ckpt_path)
    if not ckpt.exists():
        raise CommandError(
            f"--ckpt_path {ckpt}: no such file or directory. HINT: pass a .ckpt file or a sharded checkpoint directory."
        )
    yaml_model, yaml_export = _read_config(config.config) if config.config else ({}, {})
    given = {k: v for k, v in config.items() if k in _option_names() and _given(k, argv)}
    callback = ModelExport(**{**yaml_export, **given})
    mlflow_run = _check_mlflow_options(config, callback)
    model = _build_model(ckpt, config.model, yaml_model, config.trust_checkpoint)
    datamodule = _build_datamodule(config.config) if config.config and callback.check_batches else None
    manifest = callback.export_checkpoint(model, str(ckpt), holds_weights=True, datamodule=datamodule)
    logged = _log_to_mlflow(config, callback, manifest, str(ckpt)) if mlflow_run else True
    return 0 if manifest["ok"] and logged else 1


def _check_mlflow_options(config: Any, callback: Any) -> bool:
    """Whether the export goes to an MLflow run; refuses, before any work, what cannot be done."""
    run_id, experiment = config.mlflow_run_id, config.mlflow_experiment
    if run_id and experiment:
        raise CommandError(
            "--mlflow_run_id and --mlflow_experiment: give one. HINT: the run that trained the model, or an"
            " experiment to open a new run in."
        )
    if callback.register_model and not (run_id or experiment):
        raise CommandError(
            f"--register_model {callback.register_model}: MLflow registers a model from a run."
            " HINT: add --mlflow_run_id RUN (the training run) or --mlflow_experiment NAME (a new run)."
        )
    if not (run_id or experiment):
        return False
    from lightning_deploy.tracking.extras import require_extra

    require_extra("mlflow", "--mlflow_run_id" if run_id else "--mlflow_experiment")
    return True


def _log_to_mlflow(config: Any, callback: Any, manifest: dict[str, Any], ckpt: str) -> bool:
    """Log the finished export to MLflow; whether it was logged (a failure is a warning and a manifest record)."""
    import mlflow

    from lightning_deploy.tracking.mlflow_run import log_to_mlflow
    from lightning_deploy.tracking.publish import publish

    client = mlflow.MlflowClient(config.mlflow_tracking_uri)
    dirpath, stem = callback.destination(ckpt)

    def logging() -> dict[str, Any]:
        run_id = config.mlflow_run_id or _new_run(client, config.mlflow_experiment)
        status = "FAILED"
        try:
            record = log_to_mlflow(client, run_id, dirpath, manifest, stem, callback.register_model,
                                   log_files=callback.log_artifacts)  # fmt: skip
            status = "FINISHED"
            return record
        finally:
            if not config.mlflow_run_id:  # the run this command opened ends with what it holds
                client.set_terminated(run_id, status)

    records = publish([("mlflow", logging)], dirpath, stem, "lightning-deploy export")
    manifest["tracking"] = records
    return all(record["error"] is None for record in records)


def _new_run(client: Any, experiment: str) -> str:
    """A new run in ``experiment`` (made where it does not exist yet)."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    return client.create_run(experiment_id, run_name="lightning-deploy export").info.run_id


@functools.cache
def _option_names() -> frozenset[str]:
    """ModelExport's command-line options (its signature, less the Python-only arguments)."""
    from lightning_deploy.lightning.callback import ModelExport

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
    from lightning_deploy.lightning.checkpoints import is_sharded, read_checkpoint_meta, rebuild

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
