#!/usr/bin/env python3
"""Write the values table of the chart's README.md from the ``# --`` comments in values.yaml.

The comment convention is helm-docs': a ``# --`` comment right above a key documents it and
may continue on the following ``#`` lines; ``# -- (int) ...`` names the type where the default
(``null``) cannot. A documented mapping is listed as one value (``resources``); an undocumented
one is a mere container whose keys must each be documented. Every value must be documented:
the script fails naming the ones that are not, so README and values cannot drift apart.

The table replaces whatever stands between the ``<!-- values:start -->`` and
``<!-- values:end -->`` markers of README.md; the prose around it is written by hand.
``gen-readme.py --check`` changes nothing and exits 1 when README.md is not current.
No network, no helm-docs binary: only Python and PyYAML.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent
START = "<!-- values:start -->"
END = "<!-- values:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_TYPE = re.compile(r"^\((?P<type>[a-z]+)\)\s*")


@dataclass
class Doc:
    path: tuple[str, ...]
    description: str
    type: str | None


class UndocumentedError(Exception):
    pass


def parse_comments(text: str) -> dict[tuple[str, ...], Doc]:
    """``# --`` comments by the key path they stand above."""
    docs: dict[tuple[str, ...], Doc] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = None
            continue
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:  # a list item or a flow continuation: part of some value
            pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            description = " ".join(p for p in pending if p)
            type_match = _TYPE.match(description)
            type_name = type_match["type"] if type_match else None
            if type_match:
                description = description[type_match.end() :]
            path = tuple(k for _, k in stack)
            docs[path] = Doc(path, description, type_name)
            pending = None
    return docs


def _lookup(values: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def rows(values: dict[str, Any], docs: dict[tuple[str, ...], Doc]) -> list[tuple[str, ...]]:
    """(key, type, default, description) for every value; fails on undocumented ones."""
    missing: list[str] = []
    out: list[tuple[str, ...]] = []

    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            doc = docs.get(path)
            if doc is None:
                if isinstance(value, dict) and value:
                    walk(value, path)  # a container: its keys carry the docs
                else:
                    missing.append(".".join(path))
                continue
            default = json.dumps(value, separators=(",", ":"))
            out.append((".".join(path), doc.type or _type_of(value), default, doc.description))

    walk(values, ())
    unknown = sorted(".".join(p) for p in docs if not _lookup(values, p)[0])
    if missing or unknown:
        lines = [f"values.yaml: no `# --` comment on {m}" for m in missing]
        lines += [f"values.yaml: comment above a key that is not a value: {u}" for u in unknown]
        raise UndocumentedError("\n".join(lines))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text) or {}
    docs = parse_comments(values_text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, type_name, default, description in rows(values, docs):
        lines.append(f"| `{key}` | {type_name} | `{_cell(default)}` | {_cell(description)} |")
    return "\n".join(lines)


def render(readme: str, values_text: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md needs the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--chart", type=Path, default=CHART, help="chart directory")
    ns = parser.parse_args()
    chart: Path = ns.chart
    readme_path = chart / "README.md"
    readme = readme_path.read_text()
    try:
        new = render(readme, (chart / "values.yaml").read_text())
    except UndocumentedError as exc:
        print(exc, file=sys.stderr)
        return 1
    if ns.check:
        if new != readme:
            print(f"{readme_path} is not current: run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{readme_path.name} is current")
        return 0
    readme_path.write_text(new)
    print(f"wrote the values table of {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
