"""How every command answers: a table for people, JSON or YAML for scripts, and exit codes
a script can rely on.

Exit codes (the README lists them):

== ========================================================================================
0  done
1  the operation failed (a duplicate, a task already finished, a Task not in a phase that
   can be re-run, an API error)
2  usage: a bad flag, a bad name, a missing setting
3  not found: unknown queue, task or Task resource
4  unreachable: Redis or the Kubernetes API does not answer
5  forbidden: the Kubernetes API refused the credentials
== ========================================================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from kubetasks.errors import KubetasksError

OK, FAILED, USAGE, NOT_FOUND, UNREACHABLE, FORBIDDEN = 0, 1, 2, 3, 4, 5
FORMATS = ("table", "json", "yaml")


class CommandError(KubetasksError):
    """An expected failure of a command: one line for stderr and the exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header), *([cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def emit(
    output: str,
    data: Any,
    header: Sequence[str] = (),
    rows: Callable[[], Sequence[Sequence[Any]]] | None = None,
    text: str | None = None,
) -> None:
    """Print ``data`` as JSON or YAML, or for a table the ``rows`` under ``header`` (or
    ``text`` when given)."""
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    elif text is not None:
        print(text)
    elif rows is not None:
        print(table(header, rows()))


def add_output_flag(parser: Any, default: str = "table") -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        help=f"output format (default {default})",
    )
