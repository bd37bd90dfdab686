"""Turn a Pod's first container into a local command line and environment.

The process kubelet runs worker pods as processes of this machine, with this virtualenv's
Python, instead of containers. What it keeps from the container spec is what decides the
worker's behaviour: ``command`` + ``args`` (with Kubernetes' ``$(VAR)`` expansion), the
environment (literal values, the downward API, ConfigMap and Secret references, ``envFrom``)
and ``workingDir`` when that directory exists here. The image is ignored, so a leading
``kubetasks`` (the worker image's entrypoint; also assumed when ``command`` is empty) becomes
``python -m kubetasks.cli`` of the running interpreter, which runs the code of the work tree.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from kubetasks.errors import ConfigurationError

JsonObject = dict[str, Any]
Lookup = Callable[[str, str, str], JsonObject | None]
"""``lookup(kind, namespace, name)`` returns a ConfigMap or Secret, or None when absent."""

ENTRYPOINT = "kubetasks"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(ConfigurationError):
    """The container cannot start as specified (what a kubelet reports as
    ``CreateContainerConfigError``): a missing ConfigMap or Secret key, an empty command."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes a ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, text)


def command_line(container: JsonObject, env: Mapping[str, str]) -> list[str]:
    """The argv to run; ``kubetasks`` becomes this interpreter's ``-m kubetasks.cli``."""
    command = [expand(str(part), env) for part in container.get("command") or []]
    args = [expand(str(part), env) for part in container.get("args") or []]
    argv = (command or [ENTRYPOINT]) + args
    if argv == [ENTRYPOINT] and not command:
        raise ContainerConfigError(
            f"container {container.get('name')!r} has neither command nor args"
        )
    if argv[0] == ENTRYPOINT:
        argv = [sys.executable, "-m", "kubetasks.cli", *argv[1:]]
    return argv


#: Flags of ``kubetasks worker`` that open a listening port.
PORT_FLAGS = ("--metrics-port",)


def local_ports(argv: list[str], free_port: Callable[[], int]) -> list[str]:
    """``argv`` with every listening port (``--metrics-port N``, N > 0) moved to a free port
    of this machine: the pods' processes share its network, where every worker pod of a
    Deployment asking for the same port (and the operator's own 9090) would collide."""
    out = list(argv)
    for i, part in enumerate(out[:-1]):
        if part in PORT_FLAGS and out[i + 1] != "0":
            out[i + 1] = str(free_port())
    return out


def container_env(pod: JsonObject, container: JsonObject, lookup: Lookup) -> dict[str, str]:
    """The variables the container declares (``envFrom`` first, then ``env``, in order),
    plus ``POD_NAME`` and ``POD_NAMESPACE`` which worker pods always get."""
    meta = pod["metadata"]
    namespace = str(meta["namespace"])
    env: dict[str, str] = {"POD_NAME": str(meta["name"]), "POD_NAMESPACE": namespace}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, ref in (
            ("ConfigMap", source.get("configMapRef")),
            ("Secret", source.get("secretRef")),
        ):
            if not ref:
                continue
            obj = lookup(kind, namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f"{kind.lower()} {ref['name']!r} not found")
            for key, value in _data(kind, obj).items():
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" in var:
            found = _value_from(pod, var["valueFrom"], lookup)
            if found is not None:
                env[name] = found
        else:
            env[name] = expand(str(var.get("value") or ""), env)
    return env


def _value_from(pod: JsonObject, source: JsonObject, lookup: Lookup) -> str | None:
    namespace = str(pod["metadata"]["namespace"])
    if "fieldRef" in source:
        return field_value(pod, str(source["fieldRef"]["fieldPath"]))
    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = source.get(key)
        if not ref:
            continue
        obj = lookup(kind, namespace, ref["name"])
        data = _data(kind, obj) if obj is not None else None
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(
                f"{kind.lower()} {ref['name']!r} key {ref['key']!r} not found"
            )
        return data[ref["key"]]
    # resourceFieldRef (limits and requests) means nothing for a local process.
    return None


_DOWNWARD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_value(pod: JsonObject, path: str) -> str:
    """The downward-API ``fieldRef`` paths a worker could use."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    match = _DOWNWARD.fullmatch(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef {path!r}")


def _data(kind: str, obj: JsonObject) -> dict[str, str]:
    if kind == "Secret":
        return {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        } | {str(k): str(v) for k, v in (obj.get("stringData") or {}).items()}
    return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
