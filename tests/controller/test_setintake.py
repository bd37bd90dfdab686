"""The TaskSet controller's pure decisions: ranges, top-ups under parallelism, the end of a
set under its success policy, and the restart after Redis lost the bookkeeping."""

from __future__ import annotations

from kubetasks.controller.setintake import decide, index_ranges, item_messages, parse_ranges
from kubetasks.queue import SetState


def state(next: int, ok: int = 0, bad: int = 0, run: int = 0) -> SetState:
    return SetState(exists=True, next=next, succeeded=ok, failed=bad, running=run)


def test_ranges_round_trip_as_indexed_jobs_write_them() -> None:
    assert index_ranges([7, 0, 1, 2, 3, 4, 9, 10]) == "0-4,7,9-10"
    assert index_ranges([]) == ""
    assert parse_ranges("0-4,7,9-10") == [0, 1, 2, 3, 4, 7, 9, 10]
    assert parse_ranges("") == [] and parse_ranges(None) == []


def test_parallelism_tops_up_as_items_end() -> None:
    spec = {"count": 10, "parallelism": 3}
    timeline = [state(0), state(3), state(3, ok=1), state(4, ok=4), state(10, ok=9)]
    assert [list(decide(spec, s).enqueue) for s in timeline] == [
        [0, 1, 2], [], [3], [4, 5, 6], [],
    ]  # fmt: skip


def test_a_set_succeeds_once_its_policy_is_met_and_fails_only_when_every_item_ended() -> None:
    spec = {"count": 10, "successPolicy": {"minSucceeded": 7}}
    assert decide(spec, state(10, ok=7, run=3)).phase == "Succeeded"
    assert decide(spec, state(10, ok=6, bad=3)).phase == "Running"
    assert decide(spec, state(10, ok=6, bad=4)).phase == "Failed"
    assert decide({"count": 3}, state(3, ok=1, bad=1)).phase == "Running"
    assert decide({"count": 3}, state(3, ok=2, bad=1)).phase == "Failed"


def test_after_a_restore_recorded_items_are_skipped_and_the_cap_still_holds() -> None:
    spec = {"count": 8, "parallelism": 2}
    restored = state(0, ok=4)
    ended = {0, 1, 3, 4}
    first = decide(spec, restored, ended)
    assert (first.enqueue, first.upto) == ([2, 5], 6)
    second = decide(spec, state(6, ok=4), ended)
    assert second.enqueue == []  # 2 and 5 still in flight
    third = decide(spec, state(6, ok=5), ended | {2})  # item 2 ended since
    assert (third.enqueue, third.upto) == ([6], 7)


def test_items_replace_args_and_merge_kwargs_over_the_template() -> None:
    body = {
        "metadata": {"uid": "u", "namespace": "ns", "name": "s"},
        "spec": {
            "template": {
                "metadata": {"labels": {"team": "img"}},
                "spec": {"handler": "h", "args": [1], "kwargs": {"a": 1, "b": 2}},
            },
            "items": [{"args": [5]}, {"kwargs": {"b": 3}}],
        },
    }
    first, second = item_messages(body, [0, 1], 0.0)
    assert (first.id, first.args, first.kwargs) == ("u-0", [5], {"a": 1, "b": 2})
    assert (second.id, second.args, second.kwargs) == ("u-1", [1], {"a": 1, "b": 3})
    assert (second.taskset, second.index, second.resource) == ("s", 1, None)
    assert second.labels == {"team": "img"}
