"""The one rule for queue names, shared by the CRD schema and the broker.

A queue name ends up in Redis keys (inside the ``{...}`` hash tag), in metric labels and in
worker ``--queues`` flags, so it is a short lower-case word. The resource models put the
same pattern and length into the CRDs (the API server refuses anything else at admission),
and the broker checks it again before it writes anything to Redis: a name that got past one
check, such as a Task stored under an older, looser schema, is still stopped by the other.
"""

from __future__ import annotations

import re

from kubetasks.errors import InvalidQueueError

#: Lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
#: Longest queue name, in characters.
MAX_QUEUE_NAME = 63

_MATCH = re.compile(QUEUE_NAME_PATTERN).match


def is_queue_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_QUEUE_NAME and _MATCH(name) is not None


def validate_queue_name(name: object, field: str = "queue") -> str:
    """``name`` if it is a valid queue name, else InvalidQueueError naming ``field``."""
    if not is_queue_name(name):
        raise InvalidQueueError(
            f"{field}: invalid queue name {name!r}: use 1-{MAX_QUEUE_NAME} lowercase letters,"
            " digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    assert isinstance(name, str)
    return name
