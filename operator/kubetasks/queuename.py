"""The one rule for queue names, shared by the CRD schema and the broker, and how a queue
is named with its namespace.

A queue name ends up in Redis keys (inside the ``{...}`` hash tag), in metric labels and in
worker ``--queues`` flags, so it is a short lower-case word. The resource models put the
same pattern and length into the CRDs (the API server refuses anything else at admission),
and the broker checks it again before it writes anything to Redis: a name that got past one
check, such as a Task stored under an older, looser schema, is still stopped by the other.

A queue belongs to a namespace: ``default`` of namespace ``team-a`` and ``default`` of
``team-b`` are two queues that share nothing.
"""

from __future__ import annotations

import re

from kubetasks.errors import InvalidQueueError

#: Lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
#: Longest queue name, in characters.
MAX_QUEUE_NAME = 63

_MATCH = re.compile(QUEUE_NAME_PATTERN).match


#: A Kubernetes namespace name (RFC 1123 label): a queue belongs to one.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAMESPACE_NAME = 63
#: The namespace of a queue when none is named (the client's and CLI's default).
DEFAULT_NAMESPACE = "default"

_MATCH_NAMESPACE = re.compile(NAMESPACE_PATTERN).match


def is_queue_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_QUEUE_NAME and _MATCH(name) is not None


#: Names found valid already (every message is checked; a process uses a few names), up to
#: :data:`_KNOWN_CAP` of them: a set lookup instead of a regular expression per message.
_KNOWN: set[str] = set()
_KNOWN_CAP = 1024


def validate_queue_name(name: object, field: str = "queue") -> str:
    """``name`` if it is a valid queue name, else InvalidQueueError naming ``field``."""
    if type(name) is str and name in _KNOWN:
        return name
    if not is_queue_name(name):
        raise InvalidQueueError(
            f"{field}: invalid queue name {name!r}: use 1-{MAX_QUEUE_NAME} lowercase letters,"
            " digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    assert isinstance(name, str)
    if len(_KNOWN) < _KNOWN_CAP:
        _KNOWN.add(name)  # one atomic set operation: threads need no lock
    return name


def is_namespace(name: object) -> bool:
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAMESPACE_NAME
        and _MATCH_NAMESPACE(name) is not None
    )


def validate_namespace(name: object, field: str = "namespace") -> str:
    """``name`` if it is a valid namespace name, else InvalidQueueError naming ``field``."""
    if not is_namespace(name):
        raise InvalidQueueError(
            f"{field}: invalid namespace {name!r}: use 1-{MAX_NAMESPACE_NAME} lowercase"
            " letters, digits or '-', starting and ending with a letter or digit"
        )
    assert isinstance(name, str)
    return name


def qualified(namespace: str, queue: str) -> str:
    """``namespace/queue``: how a queue is named across namespaces (registry, channel, logs).
    Neither part can contain '/', so the name splits back unambiguously."""
    return f"{namespace}/{queue}"


def split_qualified(name: str) -> tuple[str, str] | None:
    """(namespace, queue) of a qualified name, or None when it is not one (a bare name
    written by the layout before queues had namespaces, or anything else)."""
    namespace, sep, queue = name.partition("/")
    if sep and is_namespace(namespace) and is_queue_name(queue):
        return namespace, queue
    return None
