"""``lightning-deploy``: export a finished run's checkpoint, show a manifest, run an artifact.

    lightning-deploy export --ckpt_path PATH [--model CLASS_PATH] [--config YAML] [ModelExport options]
    lightning-deploy show PATH
    lightning-deploy verify PATH [--format F ...] [--device D] [--no-record]
    lightning-deploy run ARTIFACT --input FILE [--output FILE.npz]
    lightning-deploy serve PATH [--port 8000] [--host 127.0.0.1] [--workers N] [--timeout S] [--no-verify] ...
    lightning-deploy predict PATH --input FILE --output DIR [--engine local|ray] [--batch-size N]
    lightning-deploy triton PATH --repository DIR [--name NAME] [--max-batch-size N]

``export``'s options are ``ModelExport``'s, parsed by jsonargparse (``lightning/export_command.py``);
the other commands are plain argparse, importing neither torch nor Lightning. Failures print
one line naming the problem and the fix, and exit with status 2 (1 when an artifact failed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from lightning_deploy.commands import COMMANDS
from lightning_deploy.errors import CommandError, LightningDeployError, VerificationError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-deploy`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:  # the one command whose parser needs jsonargparse
            try:
                from lightning_deploy.lightning.export_command import parse_export, run_export
            except ModuleNotFoundError as err:
                raise CommandError(f"export needs {err.name}. HINT: pip install 'lightning-deploy[train]'.") from None

            return run_export(parse_export(argv[1:]), argv)
        config = _parser().parse_args(argv)
        return COMMANDS[config.command](config)
    except VerificationError as err:  # an artifact that does not reproduce here: a failed check, not a usage mistake
        _fail(str(err))
        return 1
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

    verify = commands.add_parser(
        "verify", help="re-check the artifacts on their golden samples here", description=_VERIFY_DESCRIPTION,
        allow_abbrev=False,
    )  # fmt: skip
    verify.add_argument("path", help="a manifest (STEM.export.json) or one of its artifacts")
    verify.add_argument("--format", nargs="+", dest="formats", metavar="F", help="only these artifacts (default: all)")
    verify.add_argument("--device", help="cpu, cuda or cuda:N (default: each artifact's own, as load() chooses)")
    verify.add_argument("--no-record", action="store_true", help="do not add this host's record to the manifest")

    run = commands.add_parser(
        "run", help="run an artifact on inputs from a file", description=_RUN_DESCRIPTION, allow_abbrev=False
    )
    run.add_argument("artifact", help="an artifact (STEM.onnx, STEM.pt2, STEM.pte, ...) or STEM.export.json")
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
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        choices=["127.0.0.1", "0.0.0.0", "::"],  # LitServe's
        help="127.0.0.1 (this machine only, the default), or 0.0.0.0 / :: to listen on every interface",
    )
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
    # LitServe's options default to None here (serve()'s own defaults apply), so --engine ray can refuse them
    serve.add_argument("--workers", type=int, help="inference worker processes, each with the model (default: 1)")
    serve.add_argument(
        "--timeout",
        type=float,
        help="seconds before a request is answered 504; also SIGTERM's wait for requests in flight (default: 30)",
    )
    serve.add_argument(
        "--max-payload-size",
        help="bodies over this are answered 413 without being read: 64MB (default), 512KiB, 1GB or bytes",
    )
    serve.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="the environment variable holding the API key that every route but /health and /metrics needs in"
        " X-API-Key (default: LitServe's LIT_SERVER_API_KEY where set, else no key)",
    )
    serve.add_argument("--name", help="the model's name in the /v2/models/NAME routes (default: the manifest's stem)")
    serve.add_argument(
        "--engine",
        default="litserve",
        choices=["litserve", "ray"],
        help="litserve (one machine, the default) or ray (a Ray Serve application: lightning-deploy[ray])",
    )
    serve.add_argument(
        "--address", help="with --engine ray: a running cluster's address (default: Ray on this machine)"
    )
    serve.add_argument("--replicas", type=int, default=1, help="with --engine ray: how many replicas (default: 1)")
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's and LitServe's log level (default: info)",
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (uvicorn's access log; on by default)"
    )
    serve.add_argument(
        "--no-verify",
        action="store_true",
        help="start without running the artifact on its golden samples first (by default a server whose artifact"
        " does not reproduce them here refuses to start)",
    )

    predict = commands.add_parser(
        "predict", help="run every row of a Parquet file (or .npz files) through an artifact, into Parquet",
        description=_PREDICT_DESCRIPTION, allow_abbrev=False,
    )  # fmt: skip
    predict.add_argument("path", help="a manifest (STEM.export.json) or one of its artifacts")
    predict.add_argument("--input", required=True, help="a Parquet file (a column per input leaf) or a folder of .npz")
    predict.add_argument("--output", required=True, help="the folder of predictions.parquet (made if missing)")
    predict.add_argument("--engine", default="local", choices=["local", "ray"],
                         help="local (streamed in this process, the default) or ray (Ray Data's actors)")  # fmt: skip
    predict.add_argument("--address", help="with --engine ray: a running cluster's address (default: Ray here)")
    predict.add_argument("--actors", type=int, default=2, help="with --engine ray: actors, each with the model")
    predict.add_argument("--batch-size", type=int, default=256, help="rows per call of the artifact (default: 256)")
    predict.add_argument("--format", help="with a manifest, which artifact (default: the one load() picks)")
    predict.add_argument("--device", help="cpu, cuda or cuda:N (default: the device the manifest records, if here)")

    triton = commands.add_parser(
        "triton", help="write a Triton model repository entry", description=_TRITON_DESCRIPTION, allow_abbrev=False
    )
    triton.add_argument(
        "path", help="an ONNX, TorchScript or OpenVINO artifact, or its manifest (its ONNX artifact is used)"
    )
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


_DESCRIPTION = (
    "Verified deployable artifacts from Lightning checkpoints: export, show, verify, run, serve, predict, triton."
)
_VERIFY_DESCRIPTION = (
    "Run every artifact through load() on the golden samples shipped beside it (STEM.samples.npz), compare with"
    " the eager outputs by the export's rules and tolerances, time them, print a table and add this host's record"
    " to the manifest's verified_on. Exit 0 when every artifact the manifest calls ok reproduces here, 1 when one"
    " does not (naming the check, the leaf and the difference), 2 on bad usage."
)
_RUN_DESCRIPTION = "Run an artifact through load() and print or save its outputs."
_SERVE_DESCRIPTION = (
    "Serve an artifact over HTTP with LitServe: POST /predict (JSON or .npz), GET /health, GET /metrics"
    " (Prometheus). A worker that dies is replaced; SIGTERM answers the requests in flight, then stops."
)
_PREDICT_DESCRIPTION = (
    "Batch inference: every row of --input through load(), batch by batch (memory bounded by a batch), written to"
    " OUTPUT/predictions.parquet with a 'row' column and one column per output leaf, in the input's order."
)
_TRITON_DESCRIPTION = (
    "Write a Triton Inference Server model repository entry for an ONNX, TorchScript or OpenVINO artifact."
)


def help_texts() -> dict[str, str]:
    """Every command's ``--help``, keyed by the command line that prints it (for the reference page)."""
    from lightning_deploy.lightning.export_command import export_parser

    parser = _parser()
    texts = {"lightning-deploy": parser.format_help()}
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no API
    for name, command in commands.choices.items():
        help_text = export_parser().format_help() if name == "export" else command.format_help()
        texts[f"lightning-deploy {name}"] = help_text
    return texts


if __name__ == "__main__":
    raise SystemExit(main())
