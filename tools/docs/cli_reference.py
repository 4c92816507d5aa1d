"""Write docs/reference/cli.md from the commands' own ``--help``, so that the page cannot drift from the parser.

Run: ``.venv/bin/python tools/docs/cli_reference.py`` (``tests/test_docs.py`` checks the page is current).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PAGE = Path(__file__).parents[2] / "docs" / "reference" / "cli.md"
WIDTH = "100"  # argparse and jsonargparse wrap help to $COLUMNS: fixed, so that the page is the same everywhere


def render() -> str:
    """The page's text."""
    os.environ["COLUMNS"] = WIDTH
    from lightning_deploy.cli import help_texts

    lines = [
        "# Command line",
        "",
        "Every command's `--help`, as the installed `lightning-deploy` prints it (written by",
        "`tools/docs/cli_reference.py`). Guides: [after training](../cli.md), [serving](../serving.md).",
        "",
    ]
    for command, text in help_texts().items():
        lines += [f"## `{command}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


def main() -> None:
    """Write the page."""
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
