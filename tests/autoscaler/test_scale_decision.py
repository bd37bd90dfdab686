"""The autoscaler's decision, with injected time: what replicas a pool gets, and when."""

from __future__ import annotations

from kubetasks.autoscaler import (
    History,
    QueueDepth,
    QueueLimits,
    ScalePolicy,
    decide,
    recommend,
    usable,
)

POLICY = ScalePolicy(min_replicas=0, max_replicas=4, target_per_replica=10, scale_down_window=60)


def depth(pending: int = 0, due: int = 0, active: int = 0) -> QueueDepth:
    return QueueDepth(pending=pending, due_scheduled=due, active=active)


def run(steps: list[tuple[float, QueueDepth]], policy: ScalePolicy = POLICY) -> list[int]:
    """Feed a timeline to decide() as the loop does; the replicas after each step."""
    current, history, seen = 0, History(), []
    for now, load in steps:
        decision, history = decide(load, current, policy, history, now)
        current = decision.desired
        seen.append(current)
    return seen


def test_one_waiting_task_wakes_a_pool_at_zero() -> None:
    decision, _ = decide(depth(pending=1), 0, POLICY, History(), now=0.0)
    assert decision.desired == 1
    assert decision.reason.startswith("waking from zero")


def test_replicas_are_load_over_target_rounded_up_within_bounds() -> None:
    assert recommend(depth(pending=11), POLICY) == 2
    assert recommend(depth(pending=5, due=5, active=10), POLICY) == 2
    assert recommend(depth(pending=500), POLICY) == 4, "clamped to max"
    assert recommend(depth(), POLICY) == 0
    floor = ScalePolicy(min_replicas=2, max_replicas=4, target_per_replica=10)
    assert recommend(depth(), floor) == 2, "clamped to min"


def test_due_scheduled_and_running_tasks_count() -> None:
    assert recommend(depth(due=30), POLICY) == 3
    # The queue looks empty, but 35 tasks run: removing pods would only hand them back.
    decision, _ = decide(depth(active=35), 4, POLICY, History(), now=0.0)
    assert decision.desired == 4


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    timeline = [
        (0.0, depth(pending=5)),  # wake: 1
        (2.0, depth(pending=40)),  # up at once: 4
        (4.0, depth(active=12)),  # wants 2, but 4 was wanted 2 s ago
        (50.0, depth()),  # still within 60 s of the peak
        (61.9, depth()),
        (62.1, depth()),  # the 4 of t=2 left the window; 2 (t=4) is still in it
        (64.1, depth()),  # everything since t=4.1 wants 0
    ]
    assert run(timeline) == [1, 4, 4, 4, 4, 2, 0]


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    policy = ScalePolicy(0, 10, 10, scale_up_window=10, scale_down_window=0)
    timeline = [
        (0.0, depth(pending=10)),  # wake: 1 (from zero always at once)
        (1.0, depth(pending=100)),  # wants 10, but 1 was wanted within 10 s
        (10.5, depth(pending=100)),  # the t=0 recommendation left the window
        (11.5, depth(pending=100)),
    ]
    assert run(timeline, policy) == [1, 1, 10, 10]


def test_a_short_lull_does_not_remove_pods() -> None:
    timeline = [(t, depth(pending=40 if int(t) % 20 else 0)) for t in range(0, 100, 2)]
    seen = run([(float(t), d) for t, d in timeline])
    assert seen[0] == 0  # t=0 has no load
    assert min(seen[2:]) == 4, seen


def test_bounds_changed_under_the_pool_apply_at_once() -> None:
    smaller = ScalePolicy(0, 2, 10, scale_down_window=60)
    decision, _ = decide(depth(pending=100), 4, smaller, History(), now=0.0)
    assert decision.desired == 2
    larger_min = ScalePolicy(3, 5, 10)
    decision, _ = decide(depth(), 0, larger_min, History(), now=0.0)
    assert decision.desired == 3


def test_history_keeps_only_the_window() -> None:
    history = History()
    for t in range(0, 300, 2):
        _, history = decide(depth(pending=5), 1, POLICY, history, float(t))
    assert len(history.recommendations) <= 31


# -- a queue's settings bound what its load can use -------------------------------------------


def test_a_paused_queue_counts_only_its_running_tasks() -> None:
    paused = QueueLimits(paused=True)
    assert usable(depth(pending=500, due=20, active=3), paused) == depth(active=3)
    assert recommend(usable(depth(pending=500), paused), POLICY) == POLICY.min_replicas


def test_max_in_flight_bounds_the_load_whatever_the_backlog() -> None:
    capped = QueueLimits(max_in_flight=5)
    assert usable(depth(pending=1000), capped) == depth(pending=5)
    assert usable(depth(pending=1000, active=5), capped) == depth(active=5)
    assert usable(depth(pending=2, due=10, active=1), capped) == depth(pending=2, due=2, active=1)
    # 4 pods of concurrency 10 for a cap of 5: one is enough.
    assert recommend(usable(depth(pending=1000), capped), POLICY) == 1


def test_a_rate_limit_is_capacity_not_backlog() -> None:
    throttled = QueueLimits(rate=20)
    assert usable(depth(pending=1000, active=4), throttled) == depth(pending=20, active=4)
    assert recommend(usable(depth(pending=1000, active=4), throttled), POLICY) == 3
    assert recommend(depth(pending=1000, active=4), POLICY) == POLICY.max_replicas
    # Long tasks pile up running under a rate: those count in full.
    assert recommend(usable(depth(pending=1000, active=35), throttled), POLICY) == 4
