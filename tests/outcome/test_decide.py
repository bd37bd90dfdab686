"""The pure mapping from what a handler did to what happens to its task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubetasks.errors import HandlerNotFoundError, PermanentTaskError, RetryTask, TaskTimeoutError
from kubetasks.outcome import (
    MAX_RESULT_BYTES,
    BackoffPolicy,
    InvalidArgumentsError,
    Outcome,
    backoff_delay,
    decide,
)

NOW = 1000.0
NO_JITTER = BackoffPolicy(base=2.0, cap=60.0, jitter=False)


def raised(exc: Exception) -> Exception:
    """The exception as a handler would deliver it: with a traceback."""
    try:
        raise exc
    except Exception as caught:
        return caught


def run(**kw: Any) -> Outcome:
    base: dict[str, Any] = {
        "attempt": 1,
        "max_retries": 3,
        "backoff": NO_JITTER,
        "deadline": None,
        "now": NOW,
        "rand": lambda: 0.5,
    }
    return decide(**(base | kw))


def test_success_keeps_the_result() -> None:
    out = run(result='{"x":1}')
    assert (out.kind, out.result) == ("succeeded", '{"x":1}')


def test_oversized_result_fails_with_a_clear_error() -> None:
    out = run(result='"' + "x" * MAX_RESULT_BYTES + '"')
    assert out.kind == "failed"
    assert out.error is not None
    assert out.error["type"] == "ResultTooLargeError"
    assert "cap" in out.error["message"]


@pytest.mark.parametrize(("attempt", "delay"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0)])
def test_backoff_is_exponential_and_capped(attempt: int, delay: float) -> None:
    assert backoff_delay(NO_JITTER, attempt, lambda: 0.0) == delay
    out = run(attempt=attempt, max_retries=10, exc=raised(ValueError("boom")))
    assert (out.kind, out.retry_at) == ("retry", NOW + delay)
    assert out.error is not None
    assert out.error["type"] == "ValueError" and "boom" in out.error["traceback"]


def test_jitter_spreads_over_the_upper_half() -> None:
    policy = BackoffPolicy(base=10, cap=100, jitter=True)
    assert backoff_delay(policy, 1, lambda: 0.0) == 5.0
    assert backoff_delay(policy, 1, lambda: 0.999999) == pytest.approx(10.0, abs=1e-4)


def test_gives_up_after_max_retries() -> None:
    out = run(attempt=4, max_retries=3, exc=ValueError("boom"))
    assert out.kind == "failed"
    assert out.error is not None
    assert "gave up after 4 attempts" in out.error["message"]


def test_retry_task_with_delay_overrides_backoff() -> None:
    out = run(exc=RetryTask("later", delay=42))
    assert (out.kind, out.retry_at) == ("retry", NOW + 42)


@pytest.mark.parametrize(
    "exc",
    [PermanentTaskError("no"), InvalidArgumentsError("bad args"), HandlerNotFoundError("who")],
)
def test_permanent_errors_never_retry(exc: Exception) -> None:
    out = run(exc=exc)
    assert out.kind == "failed"
    assert out.error is not None
    assert out.error["type"] == type(exc).__name__


def test_cancellation_is_its_own_outcome() -> None:
    assert run(exc=asyncio.CancelledError()).kind == "cancelled"


def test_no_retry_after_the_deadline() -> None:
    out = run(exc=TaskTimeoutError("slow"), deadline=NOW + 1)
    assert out.kind == "deadline_exceeded"
    assert out.error is not None
    assert "deadline" in out.error["message"]
