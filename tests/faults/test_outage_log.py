"""What the log says about a dependency's failures: a blip is one INFO line when it ends, an
outage two warnings (when it is a second old, and when it ends), nothing per failed call."""

from __future__ import annotations

import logging

import pytest

from kubetasks.outages import BLIP_QUIET_SECONDS, GRACE_SECONDS, Outage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]


def test_a_blip_is_one_info_line_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    clock = Clock()
    outage = Outage("Redis", logging.getLogger("test.outage"), clock)
    outage.failed(ConnectionError("connection reset"))
    clock.now += 0.25
    outage.failed(ConnectionError("refused"))
    assert outage.ongoing and told(caplog) == []
    outage.succeeded()
    assert not outage.ongoing
    assert told(caplog) == [
        (
            logging.INFO,
            "Redis calls failed for 0.2 s and succeed again"
            " (2 failed; the first: connection reset)",
        )
    ]
    outage.succeeded()  # nothing more: the blip is over
    assert len(told(caplog)) == 1
    for _ in range(5):  # blips in the seconds after: the same event, not told again
        clock.now += 1.0
        outage.failed(ConnectionError("connection reset"))
        outage.succeeded()
    assert len(told(caplog)) == 1


def test_an_outage_is_two_warnings_whatever_the_failed_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    clock = Clock()
    outage = Outage("Redis", logging.getLogger("test.outage"), clock)
    for _ in range(200):
        outage.failed(ConnectionError("refused"))
        clock.now += GRACE_SECONDS / 20
    outage.succeeded()
    assert told(caplog) == [
        (logging.WARNING, "Redis is unreachable (refused); retrying quietly"),
        (logging.WARNING, "Redis is reachable again after 10.0 s (200 calls failed meanwhile)"),
    ]
    # A blip right after it is the same event (a restarted server fails each pooled
    # connection once); one later is told.
    outage.failed(ConnectionError("reset"))
    outage.succeeded()
    assert len(told(caplog)) == 2
    clock.now += BLIP_QUIET_SECONDS
    outage.failed(ConnectionError("reset"))
    outage.succeeded()
    assert told(caplog)[-1] == (
        logging.INFO,
        "Redis calls failed for 0.0 s and succeed again (1 failed; the first: reset)",
    )
