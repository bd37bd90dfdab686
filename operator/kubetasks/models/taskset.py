"""The TaskSet resource: one object that stands for many tasks.

A TaskSet is a Task template and either a list of ``items`` (arguments per item) or a
``count``. Its items never become objects in etcd: the operator enqueues them in Redis in
batches, workers report each item to Redis only, and the operator writes the set's status in
aggregate, a few times per second at most. This is the path for fan-out at a scale that one
Task object per unit of work would not survive (each Task costs a create and a status write).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from kubetasks.models.base import (
    ANY_JSON,
    CONDITIONS,
    DEPENDENCY,
    MAX_NAME,
    Condition,
    Model,
    Timestamp,
    cel,
)
from kubetasks.models.periodictask import TaskTemplateMetadata
from kubetasks.models.task import TaskSpec
from kubetasks.vocabulary import TaskSetPhase

#: Most items of a TaskSet given as ``items`` (each is stored in the object, in etcd).
MAX_ITEMS = 10_000
#: Most items of a TaskSet given as ``count`` (only the number is stored).
MAX_COUNT = 1_000_000
#: Failures kept in ``status.failures`` (the first ones, by the time they happened).
MAX_FAILURES = 10


class TaskSetTemplate(Model):
    """What every item runs: a Task spec, plus labels."""

    rules: ClassVar = [
        cel(
            "!has(self.spec.runAt) && !has(self.spec.delaySeconds)",
            "template.spec.runAt and template.spec.delaySeconds are not supported in a TaskSet:"
            " delay the set with dependsOn, or create it later",
        ),
        cel(
            "!has(self.spec.uniqueKey)",
            "template.spec.uniqueKey is not supported in a TaskSet: items are unique by index",
        ),
        cel(
            "!has(self.spec.dependsOn)",
            "template.spec.dependsOn is not supported: give the TaskSet's own spec.dependsOn",
        ),
    ]

    metadata: TaskTemplateMetadata | None = None
    """Labels of the items (shown by ``kubetasks taskset results``; items are not objects)."""
    spec: TaskSpec
    """The Task spec every item runs (handler, queue, priority, maxRetries, retryBackoff,
    timeoutSeconds, args, kwargs, ...). ``activeDeadlineSeconds`` counts from the set's
    creation."""


class TaskSetItem(Model):
    """The arguments of one item."""

    args: list[Any] | None = Field(
        default=None, max_length=64, json_schema_extra={"items": ANY_JSON}
    )
    """Positional arguments of this item; when given, they replace the template's ``args``."""
    kwargs: dict[str, Any] | None = Field(
        default=None, max_length=64, json_schema_extra={"additionalProperties": ANY_JSON}
    )
    """Keyword arguments of this item, merged over the template's ``kwargs``."""


class SuccessPolicy(Model):
    """When the set counts as succeeded."""

    min_succeeded: int = Field(ge=1, le=MAX_COUNT)
    """The set succeeds as soon as this many items succeeded (the items still queued or
    running are then dropped); it fails when every item ended and fewer succeeded."""


class TaskSetSpec(Model):
    """A Task template and the items to run it for."""

    rules: ClassVar = [
        cel(
            "has(self.items) != has(self.count)",
            "exactly one of items and count must be set",
        ),
        cel(
            "!has(self.successPolicy) || (has(self.items) ?"
            " self.successPolicy.minSucceeded <= size(self.items) :"
            " self.successPolicy.minSucceeded <= self.count)",
            "successPolicy.minSucceeded cannot exceed the number of items",
        ),
    ]

    template: TaskSetTemplate
    """The Task every item runs, with the item's arguments."""
    items: list[TaskSetItem] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    """One entry per item (at most 10,000): its args replace the template's, its kwargs
    are merged over the template's. Exclusive with ``count``."""
    count: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Run the template this many times (at most 1,000,000); each run learns its index
    (from 0) through the handler context, ``ctx.index``. Exclusive with ``items``."""
    parallelism: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Most items queued or running at once; more are enqueued as items finish. Default: no
    cap (all items are enqueued at once)."""
    success_policy: SuccessPolicy | None = None
    """When the set succeeds. Default: every item must succeed. The set fails when every
    item ended and the policy is not met (items go on running after one failed)."""
    depends_on: list[str] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "items": {"type": "string", "maxLength": MAX_NAME, "pattern": DEPENDENCY},
            "x-kubernetes-list-type": "set",
        },
    )
    """Tasks (by name) and TaskSets (``taskset/<name>``) of the same namespace that must
    succeed before any item is enqueued; the set is Waiting until then, and Failed (reason
    DependencyFailed, naming the dependency) when one of them fails."""
    cancel: bool = False
    """Set to true to cancel the set: items not started are dropped, running ones are told to
    stop, and the set ends Cancelled."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31536000)
    """Delete the TaskSet (and its items' records) this many seconds after it finished.
    Default: keep."""


#: Rules on a TaskSet's spec across updates.
SPEC_UPDATE_RULES = [
    cel("self.template == oldSelf.template", "spec.template is immutable: create a new TaskSet"),
    cel(
        "has(self.items) == has(oldSelf.items) && (!has(self.items) || self.items == oldSelf.items)"
        " && (!has(self.count) || self.count == oldSelf.count)",
        "spec.items and spec.count are immutable: create a new TaskSet",
    ),
    cel("self.cancel || !oldSelf.cancel", "a cancelled TaskSet cannot be resumed"),
]


class ItemFailure(Model):
    """One failed item."""

    index: int = Field(ge=0)
    """The item's index."""
    type: str = Field(default="", max_length=256)
    """The exception class name (or reason) of its last attempt."""
    message: str = Field(default="", max_length=2048)
    """The error message (at most 1024 characters are kept)."""


class TaskSetStatus(Model):
    """The set in aggregate, written by the operator from Redis a few times per second."""

    phase: TaskSetPhase | None = None
    """Pending, Waiting (for dependsOn), Running, or one of the final phases Succeeded,
    Failed, Cancelled."""
    total: int | None = None
    """Items in the set."""
    succeeded: int | None = None
    """Items that succeeded."""
    failed: int | None = None
    """Items that failed for good (after their retries)."""
    running: int | None = None
    """Items a worker is running now."""
    queued: int | None = None
    """Items enqueued and not started (or waiting for a retry)."""
    completed_indexes: str | None = Field(default=None, max_length=1_000_000)
    """Indexes of the items that succeeded, as ranges (``0-4,7``), as Indexed Jobs write
    them."""
    failed_indexes: str | None = Field(default=None, max_length=1_000_000)
    """Indexes of the items that failed for good, as ranges."""
    failures: list[ItemFailure] | None = Field(default=None, max_length=MAX_FAILURES)
    """The first failures (at most 10): index, error type and message."""
    progress: float | None = Field(default=None, ge=0, le=1)
    """Fraction of the items finished (succeeded or failed), from 0 to 1."""
    started_at: Timestamp | None = None
    """When the first items were enqueued."""
    finished_at: Timestamp | None = None
    """When the set reached its final phase."""
    error: str | None = Field(default=None, max_length=2048)
    """Why the set failed or waits, when not because of its items (a dependency, say)."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=16, json_schema_extra=CONDITIONS
    )
    """Running, Succeeded and Failed, each True or False, so that
    ``kubectl wait --for=condition=Succeeded taskset/NAME`` works."""
    observed_generation: int | None = None
    """The spec generation the operator last acted on."""


class TaskSet(Model):
    """Many tasks in one object: a Task template, and items or a count."""

    spec: TaskSetSpec
    status: TaskSetStatus | None = None
