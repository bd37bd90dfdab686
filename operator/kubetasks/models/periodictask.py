"""The PeriodicTask resource: a Task template and a cron schedule, run once per slot.

Each due slot becomes a child Task whose name comes from the PeriodicTask's name and the
slot's time, so creating it twice is impossible and several operators never double-run a
slot. The schedule and time zone are checked here as far as a pattern can; the controller
reports what only the parser can tell as the ScheduleValid condition.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from kubetasks.models.base import (
    CONDITIONS,
    MAX_NAME,
    Annotations,
    Condition,
    Labels,
    Model,
    Timestamp,
    cel,
)
from kubetasks.models.task import TaskSpec
from kubetasks.vocabulary import ConcurrencyPolicy


class TaskTemplateMetadata(Model):
    """Labels and annotations given to every child Task."""

    labels: Labels | None = Field(default=None, max_length=64)
    """Labels of each child Task (besides ``kubetasks.dev/periodic-task``)."""
    annotations: Annotations | None = Field(default=None, max_length=64)
    """Annotations of each child Task (besides ``kubetasks.dev/scheduled-time``)."""


class TaskTemplate(Model):
    """The Task created for each slot."""

    metadata: TaskTemplateMetadata | None = None
    """Labels and annotations of each child Task."""
    spec: TaskSpec
    """The child Task's spec (the same fields as a Task's)."""


class PeriodicTaskSpec(Model):
    """When to run, what to run, and what to do when runs overlap or were missed."""

    rules: ClassVar = [
        cel(
            "!has(self.taskTemplate.spec.dependsOn)",
            "taskTemplate.spec.dependsOn is not supported: a periodic run cannot wait for Tasks",
            fieldPath=".taskTemplate.spec.dependsOn",
        ),
        cel(
            "!has(self.taskTemplate.spec.runAt) && !has(self.taskTemplate.spec.deadline)",
            "taskTemplate.spec cannot set runAt or deadline (absolute times): use delaySeconds "
            "or activeDeadlineSeconds, which count from each run",
        ),
    ]

    schedule: str = Field(
        min_length=1,
        max_length=128,
        pattern=(
            r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
            r"|@every ([0-9]+(\.[0-9]+)?(ms|s|m|h))+"
            r"|[^\s@]+( [^\s@]+){4,5})$"
        ),
    )
    """When to run: a 5-field cron expression (``minute hour day-of-month month
    day-of-week``, for example ``*/5 * * * *``), a 6-field one with seconds first
    (``*/30 * * * * *``), a macro (``@yearly``, ``@monthly``, ``@weekly``, ``@daily``,
    ``@hourly``), or ``@every <duration>`` (``@every 30s``, ``@every 1h30m``; slots are
    multiples of the duration since the Unix epoch)."""
    time_zone: str = Field(
        default="UTC", max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"
    )
    """IANA time zone the schedule is read in (for example `Europe/Berlin`). Default UTC.
    Across daylight-saving changes, as CronJob: a slot is every instant whose local wall
    time matches, so a wall time skipped by the spring-forward gap does not run that day,
    and a wall time repeated by the autumn fall-back runs twice, once per pass (each is a
    distinct instant and a distinct child Task). Stay in UTC, or avoid 01:00-03:00 local,
    to be clear of both."""
    task_template: TaskTemplate
    """The Task created for each run."""
    concurrency_policy: ConcurrencyPolicy = "Allow"
    """What to do when a slot is due while an earlier run is still active: ``Allow`` runs
    both, ``Forbid`` skips the new slot, ``Replace`` cancels the active run and starts the new
    one. Default Allow."""
    starting_deadline_seconds: int | None = Field(default=None, ge=0, le=31536000)
    """How late a slot may still start, in seconds from the slot (0: within the slot's own
    second). Unset (the default): no deadline. After the operator was down, at most one
    missed slot runs, as in CronJob: the most recent one, as soon as the operator is back,
    if it is within this deadline; the earlier ones, and one past the deadline, are skipped
    and counted as missed. A slot whose child Task exists, or that is not after
    status.lastScheduleTime, never runs again."""
    suspend: bool = False
    """Stop creating runs (active runs continue). Slots that pass while suspended are missed,
    and resuming does not run them, except the most recent within startingDeadlineSeconds."""
    successful_tasks_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished child Tasks that succeeded to keep; older ones are deleted. Default 3."""
    failed_tasks_history_limit: int = Field(default=1, ge=0, le=100)
    """Finished child Tasks that failed (or were cancelled or missed their deadline) to keep;
    older ones are deleted. Default 1."""


class PeriodicTaskStatus(Model):
    """The schedule's progress, written by the operator."""

    last_schedule_time: Timestamp | None = None
    """The slot of the latest run created."""
    next_schedule_time: Timestamp | None = None
    """The next slot that will run (absent while suspended or when the schedule is invalid)."""
    last_successful_time: Timestamp | None = None
    """When the latest successful run finished."""
    active: list[str] | None = Field(
        default=None,
        max_length=256,
        json_schema_extra={
            "items": {"type": "string", "maxLength": MAX_NAME},
            "x-kubernetes-list-type": "set",
        },
    )
    """Names of the child Tasks that have not finished."""
    active_count: int | None = Field(default=None, ge=0)
    """How many child Tasks have not finished."""
    missed_slots: int | None = Field(default=None, ge=0)
    """Slots that never ran because they were too late (startingDeadlineSeconds), skipped by
    concurrencyPolicy Forbid, passed while suspended, or passed while no operator ran and
    were not the most recent when it came back."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=16, json_schema_extra=CONDITIONS
    )
    """ScheduleValid: False with reason InvalidSchedule or InvalidTimeZone and the parser's
    message when the schedule cannot run."""
    observed_generation: int | None = None
    """The spec generation the operator last acted on."""


class PeriodicTask(Model):
    """Runs a Task on a cron schedule, exactly once per slot."""

    spec: PeriodicTaskSpec
    status: PeriodicTaskStatus | None = None
