"""The rules for status writes a worker still owes (kubetasks.k8s.backlog), in fake time:
the newest write per Task wins, one write per Task is on the wire, the buffer is bounded
(oldest dropped), while writes fail one probe goes out per capped backoff, and only a
missing or overloaded API server makes a write worth retrying."""

from __future__ import annotations

import aiohttp
import pytest

from kubetasks.k8s.api import _BY_STATUS, ApiError, is_unavailable
from kubetasks.k8s.backlog import (
    DROP_WARNING_INTERVAL,
    RETRY_CAP,
    Backlog,
    DropWarnings,
    Outage,
    Recovery,
    Write,
    retry_delay,
    supersedes,
)
from kubetasks.k8s.sink import _Start, end_patch
from kubetasks.outcome import Outcome
from kubetasks.queue import Leased, TaskMessage
from kubetasks.status_patches import running_patch

T = 1_800_000_000.0


def write(task: str, attempt: int = 1, final: bool = True, **fields: object) -> Write:
    return Write("ns", task, f"uid-{task}", attempt, final, {"status": {}}, **fields)  # type: ignore[arg-type]


def names(writes: list[Write]) -> list[tuple[str, int, bool]]:
    return [(w.name, w.attempt, w.final) for w in writes]


def test_a_later_attempt_or_the_end_of_the_same_one_supersedes() -> None:
    order = [write("t", 1, False), write("t", 1, True), write("t", 2, False), write("t", 2, True)]
    matrix = [[supersedes(new, old) for old in order] for new in order]
    assert matrix == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_the_newest_write_per_task_is_the_one_sent() -> None:
    backlog = Backlog()
    for w in (write("a", 1, False), write("b", 1, False), write("a", 1, True)):
        assert backlog.add(w) == []
    assert backlog.add(write("b", 0, True)) == []  # older than what is held: ignored
    assert names(backlog.take(T, 10)) == [("a", 1, True), ("b", 1, False)]
    assert len(backlog) == 2 and backlog.sending == 2


def test_one_write_per_task_on_the_wire_and_a_landed_start_makes_the_end_not_fresh() -> None:
    backlog = Backlog()
    backlog.add(write("a", 1, False, fresh=True))
    (running,) = backlog.take(T, 10)
    backlog.add(write("a", 1, True, fresh=True))
    assert backlog.take(T, 10) == []  # the start is on the wire: the end waits for it
    assert backlog.done(running, "landed") == []
    (end,) = backlog.take(T, 10)
    assert (end.final, end.fresh) == (True, False)
    backlog.done(end, "landed")
    assert len(backlog) == 0


def test_a_failed_write_goes_back_to_the_end_of_the_line_unless_a_newer_one_came() -> None:
    backlog = Backlog()
    for task in "abc":
        backlog.add(write(task, 1, False))
    sent = backlog.take(T, 10)
    backlog.add(write("b", 1, True))
    for w in sent:
        backlog.done(w, "failed")
    assert names(backlog.take(T, 10)) == [("b", 1, True), ("a", 1, False), ("c", 1, False)]


def test_one_task_whose_writes_keep_failing_cannot_hold_up_the_others() -> None:
    backlog = Backlog()
    for task in "ab":
        backlog.add(write(task))
    tried = []
    for _ in range(4):
        (w,) = backlog.take(T, 1)
        tried.append(w.name)
        backlog.done(w, "failed")
    assert tried == ["a", "b", "a", "b"]


def test_dropped_writes_leave_the_backlog_and_gone_tasks_do_not_come_back() -> None:
    backlog = Backlog()
    backlog.add(write("a"))
    (w,) = backlog.take(T, 1)
    assert backlog.done(w, "dropped") == []
    assert len(backlog) == 0 and backlog.take(T, 10) == []


def test_beyond_the_limit_the_task_that_waited_longest_is_dropped() -> None:
    backlog = Backlog(limit=2)
    backlog.add(write("a", 1, False))
    backlog.add(write("b", 1, False))
    backlog.add(write("a", 1, True))  # supersedes: a keeps its age
    (a, b) = backlog.take(T, 2)
    backlog.done(b, "landed")
    backlog.done(a, "failed")  # a is back, at the end of the line, still the oldest
    backlog.add(write("c"))
    assert names(backlog.add(write("d"))) == [("a", 1, True)]
    assert names(backlog.take(T, 10)) == [("c", 1, True), ("d", 1, True)]


def test_a_start_waits_for_its_due_time() -> None:
    backlog = Backlog()
    backlog.add(write("a", 1, False, due=T + 0.05))
    backlog.add(write("b", 1, True, due=T))
    assert names(backlog.take(T, 10)) == [("b", 1, True)]
    assert backlog.next_due() == T + 0.05
    assert names(backlog.take(T + 0.05, 10)) == [("a", 1, False)]
    assert backlog.next_due() is None


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [retry_delay(n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert RETRY_CAP == 1.0


def test_while_failing_one_probe_per_backoff_and_the_first_answer_ends_the_outage() -> None:
    # The API server is down from T to T + 5: what goes out when, in fake time.
    outage, backlog = Outage(), Backlog()
    for task in "abc":
        backlog.add(write(task))
    now = T
    first = backlog.take(now, outage.allowance(now, 32))
    assert len(first) == 3
    began = []
    for w in first:
        backlog.done(w, "failed")
        began.append(outage.failed(now, w, len(backlog)))
    assert began == [True, False, False]  # one outage, begun by the first failure
    outage.submitted()  # a write made during the outage
    backlog.add(write("d"))
    probes, recovery = [], None
    while recovery is None:
        wake = outage.wake_at(backlog.next_due())
        assert wake is not None
        now = round(wake, 6)
        assert outage.allowance(now - 0.01, 32) == 0
        (probe,) = backlog.take(now, outage.allowance(now, 32))
        outage.sent(probe)
        assert outage.allowance(now, 32) == 0 and outage.wake_at(backlog.next_due()) is None
        probes.append(now - T)
        if now < T + 5:
            backlog.done(probe, "failed")
            assert not outage.failed(now, probe, len(backlog))
        else:
            backlog.done(probe, "dropped")  # a Task gone is an answer too
            recovery = outage.answered(now, probe)
    assert [round(p, 6) for p in probes] == [0.1, 0.3, 0.7, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert recovery == Recovery(seconds=5.5, waited=4, dropped=0)
    assert outage.allowance(now, 32) == 32  # healthy: everything goes out at once
    assert outage.answered(now, probe) is None


def test_a_write_sent_before_the_outage_does_not_push_the_next_probe_back() -> None:
    outage = Outage()
    a, b, c = write("a"), write("b"), write("c")
    outage.failed(T, a, 3)
    outage.sent(b)  # the probe, at T + 0.1
    assert not outage.failed(T + 0.15, c, 3)  # a straggler from before
    assert outage.next_try == T + 0.1 and outage.probe is b
    outage.lost(2)
    assert outage.answered(T + 1, b) == Recovery(seconds=1.0, waited=3, dropped=2)


def test_only_the_probe_answering_ends_the_outage() -> None:
    # A kube-apiserver shutting down answers the requests it had taken and refuses new ones
    # (429) for a moment: an answer to a write sent before the failure says nothing of the
    # next one, and ending the outage on it told one outage in six lines.
    outage = Outage()
    a, b, c = write("a"), write("b"), write("c")
    assert outage.failed(T, a, 3)  # 429: the apiserver is shutting down
    assert outage.answered(T + 0.002, b) is None  # taken before: it lands all the same
    assert outage.since == T
    outage.sent(c)  # the probe, at T + 0.1
    assert outage.answered(T + 10, c) == Recovery(seconds=10.0, waited=3, dropped=0)


def test_drops_are_warned_of_at_once_then_at_most_once_per_interval() -> None:
    warnings = DropWarnings()
    timeline = [(T, 1), (T + 1, 5), (T + 30, 2), (T + DROP_WARNING_INTERVAL, 1), (T + 61, 0)]
    assert [warnings.dropped(now, n) for now, n in timeline] == [1, 0, 0, 8, 0]


def leased(attempt: int) -> Leased:
    return Leased(TaskMessage(id="uid-t", handler="h", resource="ns/t"), attempt)


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome("succeeded", '{"n": 1}'),
        Outcome("retry", error={"type": "E", "message": "m"}, retry_at=T + 9),
        Outcome("failed", error={"type": "E", "message": "m"}),
        Outcome("deadline_exceeded", error={"type": "TaskTimeoutError", "message": "m"}),
    ],
)
def test_the_end_of_an_attempt_says_all_its_start_would_have_said(outcome: Outcome) -> None:
    # Why an end may replace a start that was never sent: every member Running sets, the
    # end sets too, with the start's own values where they are the start's.
    running = running_patch(2, "pod", T)["status"]
    end = end_patch(leased(2), outcome, T + 1, _Start("pod", T))["status"]
    assert set(running) <= set(end)
    assert (end["startedAt"], end["worker"], end["attempts"]) == (
        running["startedAt"], "pod", 2,
    )  # fmt: skip
    assert end["phase"] != "Running"


def api_error(status: int) -> ApiError:
    return _BY_STATUS.get(status, ApiError)("PATCH", "/x", status, {"reason": "R"})


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (aiohttp.ClientOSError(111, "Connection refused"), True),
        (aiohttp.ClientConnectionError("Connection reset by peer"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (api_error(429), True),
        (api_error(500), True),
        (api_error(503), True),
        (api_error(403), False),
        (api_error(404), False),
        (api_error(409), False),
        (api_error(422), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_a_missing_or_overloaded_api_server_makes_a_write_worth_retrying(
    exc: BaseException, retried: bool
) -> None:
    assert is_unavailable(exc) is retried
