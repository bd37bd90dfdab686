"""The budget that keeps Event posting from doubling the API server's load in a burst."""

from __future__ import annotations

from kubetasks.budget import Budget
from kubetasks.clock import FakeClock


def test_a_burst_is_capped_then_refills_at_the_rate() -> None:
    clock = FakeClock(1000.0)
    budget = Budget(rate=20, burst=100, clock=clock)
    assert sum(budget.take() for _ in range(500)) == 100
    clock.advance(1.0)
    assert sum(budget.take() for _ in range(500)) == 20
    clock.advance(60.0)  # never more than the burst saved up
    assert sum(budget.take() for _ in range(500)) == 100


def test_warnings_keep_a_reserve_that_normal_events_cannot_spend() -> None:
    clock = FakeClock(1000.0)
    budget = Budget(rate=20, burst=100, clock=clock)
    normal = sum(budget.take(keep=20) for _ in range(500))
    warnings = sum(budget.take() for _ in range(500))
    assert (normal, warnings) == (80, 20)
