#!/usr/bin/env python3
"""Copy the generated CRDs from ``crds/`` into the chart's ``templates/crds/``.

``crds/*.yaml`` is generated from the pydantic models (``python -m kubetasks.crdgen``) and is
the single source of the CRDs. The chart keeps them under ``templates/`` rather than Helm's
``crds/`` folder so that ``helm upgrade`` updates them; each copy is wrapped in
``{{- if .Values.crds.install }}`` and gains the chart's labels and, with ``crds.keep``, the
``helm.sh/resource-policy: keep`` annotation. Nothing else changes: with the templating lines
removed, a chart CRD parses to exactly its source (``tests/chart/test_crds.py`` checks that).

Usage: ``sync-crds.py`` rewrites the chart's copies; ``sync-crds.py --check`` only reports
drift and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent
REPO = CHART.parent.parent
SOURCE = REPO / "crds"
TARGET = CHART / "templates" / "crds"


class _Dumper(yaml.SafeDumper):
    """Block style, keys in source order, long descriptions kept on one line each."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def source_crds(source: Path = SOURCE) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every CRD document under crds/, by metadata.name."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(source.glob("*.yaml")) + sorted(source.glob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise SystemExit(f"{path}: not a CustomResourceDefinition: {doc.get('kind')!r}")
            name = doc["metadata"]["name"]
            if name in found:
                raise SystemExit(f"{path}: CRD {name} is also defined in {found[name][0]}")
            found[name] = (path, doc)
    return found


def render(path: Path, crd: dict[str, Any]) -> str:
    """The chart template of one CRD."""
    if "{{" in _dump(crd) or "}}" in _dump(crd):
        # Helm would take them for template actions.
        raise SystemExit(f"{path}: contains '{{{{' or '}}}}', which Helm cannot carry verbatim")
    meta = dict(crd["metadata"])
    name = meta.pop("name")
    labels = meta.pop("labels", None) or {}
    annotations = meta.pop("annotations", None) or {}
    rest = {k: v for k, v in crd.items() if k not in ("apiVersion", "kind", "metadata")}
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    out = [
        f"{{{{- /* Generated from {rel} by charts/kubetasks/hack/sync-crds.py: edit the models"
        " and run `make crds`, not this file. */}}",
        "{{- if .Values.crds.install }}",
        f"apiVersion: {crd['apiVersion']}",
        f"kind: {crd['kind']}",
        "metadata:",
        f"  name: {name}",
        "  labels:",
        '    {{- include "kubetasks.labels" . | nindent 4 }}',
    ]
    if labels:
        out.append(_indent(_dump(labels), 4).rstrip("\n"))
    out += [
        "  annotations:",
        "    {{- if .Values.crds.keep }}",
        "    helm.sh/resource-policy: keep",
        "    {{- end }}",
    ]
    if annotations:
        out.append(_indent(_dump(annotations), 4).rstrip("\n"))
    if meta:
        out.append(_indent(_dump(meta), 2).rstrip("\n"))
    out.append(_dump(rest).rstrip("\n"))
    out.append("{{- end }}")
    return "\n".join(out) + "\n"


def wanted(source: Path, target: Path) -> dict[Path, str]:
    crds = source_crds(source)
    return {target / f"{name}.yaml": render(path, crd) for name, (path, crd) in crds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    parser.add_argument("--source", type=Path, default=SOURCE, help="default: crds/")
    parser.add_argument("--target", type=Path, default=TARGET, help="default: the chart's")
    ns = parser.parse_args()
    target: Path = ns.target
    want = wanted(ns.source, target)
    have = {p: p.read_text() for p in sorted(target.glob("*.yaml"))}
    stale = sorted(set(have) - set(want))
    changed = sorted(p for p, text in want.items() if have.get(p) != text)
    if ns.check:
        for p in changed:
            print(f"out of date: {p}", file=sys.stderr)
        for p in stale:
            print(f"no longer in crds/: {p}", file=sys.stderr)
        if changed or stale:
            print("run charts/kubetasks/hack/sync-crds.py", file=sys.stderr)
            return 1
        print(f"chart CRDs match crds/ ({len(want)} CRDs)")
        return 0
    target.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.unlink()
    for p in changed:
        p.write_text(want[p])
    print(f"chart CRDs synced from crds/: {len(changed)} written, {len(stale)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
