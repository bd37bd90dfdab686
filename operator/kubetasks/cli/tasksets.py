"""``kubetasks taskset results NAME``: each item of a TaskSet, its state, attempts, result or
error. The set is read from the Kubernetes API (its queue, uid and recorded indexes), its
items from Redis, where they live (they are never objects of their own)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from kubetasks.cli.output import NOT_FOUND, OK, CommandError, add_output_flag, emit
from kubetasks.controller.setintake import item_id, parse_ranges, total_of
from kubetasks.queue import Broker
from kubetasks.settings import redis_url

#: Item records read from Redis at once.
WINDOW = 200


def cmd_taskset_results(ns: argparse.Namespace) -> int:
    from kubetasks.k8s.api import KubeApi
    from kubetasks.k8s.tasksets import TaskSetApi

    async def read() -> dict[str, Any] | None:
        api = KubeApi()
        broker = Broker.from_url(redis_url(ns.redis_url), namespace=ns.namespace)
        try:
            body = await TaskSetApi(api).get(ns.namespace, ns.name)
            return None if body is None else await taskset_items(broker, body)
        finally:
            await broker.close()
            await api.close()

    found = asyncio.run(read())
    if found is None:
        raise CommandError(f"no TaskSet {ns.name!r} in namespace {ns.namespace}", NOT_FOUND)
    print_summary = ns.output == "table"
    if print_summary:
        print(f"taskset {ns.namespace}/{ns.name}: {found['phase']} ({found['succeeded']}/"
              f"{found['total']} succeeded, {found['failed']} failed)")  # fmt: skip
    emit(
        ns.output,
        found,
        ("INDEX", "STATE", "ATTEMPTS", "RESULT / ERROR"),
        lambda: [[i["index"], i["state"], i["attempts"], _outcome(i)] for i in found["items"]],
    )
    return OK


def _outcome(item: dict[str, Any]) -> str:
    error = item.get("error") or {}
    if item["state"] in ("failed", "retrying", "deadline_exceeded") and error:
        return f"{error.get('type', '')}: {error.get('message', '')}"[:100]
    return json.dumps(item.get("result"))[:100]


async def taskset_items(broker: Broker, body: dict[str, Any]) -> dict[str, Any]:
    """The set's items, by index: the task record when Redis still keeps it, else what the
    set's status recorded; the result from the set's results (kept with the set)."""
    spec, status, uid = body["spec"], body.get("status") or {}, body["metadata"]["uid"]
    queue = spec["template"]["spec"].get("queue", "default")
    total = total_of(spec)
    results = await broker.taskset_results(queue, uid)
    done = set(parse_ranges(status.get("completedIndexes")))
    failed = set(parse_ranges(status.get("failedIndexes")))
    items = []
    for start in range(0, total, WINDOW):
        window = range(start, min(total, start + WINDOW))
        infos = await asyncio.gather(*(broker.get_task(queue, item_id(uid, i)) for i in window))
        for i, info in zip(window, infos, strict=True):
            item: dict[str, Any] = {"index": i, "state": "not started", "attempts": 0}
            if info is not None:
                item.update(state=info.state, attempts=info.attempts, error=info.error)
            elif i in done:
                item["state"] = "succeeded"
            elif i in failed:
                item["state"] = "failed"
            if i in results:
                item["result"] = json.loads(results[i])
            elif info is not None and info.result is not None:
                item["result"] = info.result
            items.append(item)
    return {
        "taskset": body["metadata"]["name"],
        "phase": status.get("phase"),
        "total": total,
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
        "items": items,
    }


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``taskset``; ``common`` adds --redis-url and -n to a parser."""
    t = sub.add_parser("taskset", help="TaskSets: each item's outcome")
    tsub = t.add_subparsers(dest="taskset_command", required=True, metavar="{results}")
    r = tsub.add_parser("results", help="each item's state, attempts, result or error")
    common(r)
    r.add_argument("name", metavar="NAME")
    add_output_flag(r)
    r.set_defaults(func=cmd_taskset_results)
