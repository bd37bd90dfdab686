"""``kubetasks tasks ...`` and ``kubetasks dead ...``: the tasks of a queue, read and steered
through :mod:`kubetasks.queue.inspector` (Redis), and the re-run of a Task resource through
the Kubernetes API."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubetasks.cli.output import NOT_FOUND, OK, USAGE, CommandError, add_output_flag, emit
from kubetasks.queue import Broker
from kubetasks.queue.inspector import STATES, Inspector, TaskDetail, TaskSummary
from kubetasks.queuename import validate_queue_name
from kubetasks.settings import redis_url
from kubetasks.timestamps import rfc3339
from kubetasks.vocabulary import RERUNNABLE_PHASES

T = TypeVar("T")


def _run(ns: argparse.Namespace, action: Callable[[Inspector], Awaitable[T]]) -> T:
    """Run ``action`` with an inspector of the command's namespace, and check first that the
    queue (``ns.queue``, when the command has one) is one Redis knows."""

    async def go() -> T:
        broker = Broker.from_url(redis_url(ns.redis_url), namespace=ns.namespace)
        try:
            inspector = Inspector(broker)
            queue = getattr(ns, "queue", None)
            if queue is not None:
                validate_queue_name(queue, "--queue")
                if not await inspector.known(queue):
                    raise CommandError(f"unknown queue {ns.namespace}/{queue}", NOT_FOUND)
            return await action(inspector)
        finally:
            await broker.close()

    return asyncio.run(go())


def _time(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(seconds)


def _summary_json(t: TaskSummary) -> dict[str, Any]:
    return {
        "id": t.id,
        "state": t.state,
        "handler": t.handler,
        "attempts": t.attempts,
        "enqueuedAt": _time(t.enqueued_at),
        "finishedAt": _time(t.finished_at),
        "error": {"type": t.error_type, "message": t.error_message} if t.error_type else None,
        "resource": t.resource,
        "labels": t.labels,
    }


_LIST_HEADER = ("ID", "STATE", "HANDLER", "ATTEMPTS", "ENQUEUED", "ERROR")


def _list_rows(tasks: list[TaskSummary]) -> list[list[Any]]:
    return [
        [t.id, t.state, t.handler, t.attempts, _time(t.enqueued_at), t.error_type] for t in tasks
    ]


def _list(ns: argparse.Namespace, state: str) -> int:
    page = _run(
        ns,
        lambda i: i.list_tasks(ns.queue, state, cursor=ns.cursor, limit=ns.limit, search=ns.search),
    )
    data = {
        "namespace": ns.namespace,
        "queue": ns.queue,
        "state": state,
        "total": page.total,
        "cursor": page.cursor,
        "tasks": [_summary_json(t) for t in page.tasks],
    }
    emit(ns.output, data, _LIST_HEADER, lambda: _list_rows(page.tasks))
    if ns.output == "table" and page.cursor is not None:
        print(f"(more: --cursor {page.cursor})", file=sys.stderr)
    return OK


def cmd_tasks_list(ns: argparse.Namespace) -> int:
    return _list(ns, ns.state)


def cmd_dead_list(ns: argparse.Namespace) -> int:
    return _list(ns, "dead")


def _detail_json(d: TaskDetail) -> dict[str, Any]:
    info = d.info
    return {
        "id": info.id,
        "queue": info.queue,
        "state": info.state,
        "handler": info.message.handler,
        "args": info.message.args,
        "kwargs": info.message.kwargs,
        "attempts": info.attempts,
        "maxRetries": info.message.max_retries,
        "worker": info.worker,
        "enqueuedAt": _time(info.enqueued_at),
        "startedAt": _time(info.started_at),
        "finishedAt": _time(info.finished_at),
        "nextRetryAt": _time(info.next_retry_at),
        "result": info.result,
        "error": info.error,
        "history": [
            {
                "attempt": a.number,
                "worker": a.worker,
                "startedAt": _time(a.started_at),
                "finishedAt": _time(a.finished_at),
                "outcome": a.outcome,
                "errorType": a.error_type,
            }
            for a in d.history
        ],
        "resource": (
            {"namespace": d.resource[0], "name": d.resource[1], "uid": d.resource[2]}
            if d.resource
            else None
        ),
        "labels": info.message.labels,
        "rerunOf": d.rerun_of,
        "rerunAs": d.rerun_as,
    }


def _detail_text(data: dict[str, Any]) -> str:
    lines = []
    for key in ("id", "queue", "state", "handler", "args", "kwargs", "attempts", "worker"):
        lines.append(f"{key + ':':<12} {data[key]}")
    for key in ("enqueuedAt", "startedAt", "finishedAt", "nextRetryAt", "rerunOf", "rerunAs"):
        if data[key]:
            lines.append(f"{key + ':':<12} {data[key]}")
    if data["resource"]:
        r = data["resource"]
        lines.append(f"{'resource:':<12} task {r['namespace']}/{r['name']} (uid {r['uid']})")
    if data["result"] is not None:
        lines.append(f"{'result:':<12} {data['result']}")
    if data["error"]:
        err = data["error"]
        lines.append(f"{'error:':<12} {err.get('type')}: {err.get('message')}")
        if err.get("traceback"):
            lines.append(str(err["traceback"]).rstrip())
    if data["history"]:
        lines.append("history:")
        for a in data["history"]:
            kind = f" {a['errorType']}" if a["errorType"] else ""
            lines.append(
                f"  #{a['attempt']} {a['outcome']}{kind} on {a['worker']}"
                f" {a['startedAt'] or '?'} .. {a['finishedAt']}"
            )
    return "\n".join(lines)


def cmd_tasks_show(ns: argparse.Namespace) -> int:
    detail = _run(ns, lambda i: i.task(ns.queue, ns.id))
    if detail is None:
        raise CommandError(f"task {ns.id} not found on queue {ns.namespace}/{ns.queue}", NOT_FOUND)
    data = _detail_json(detail)
    emit(ns.output, data, text=_detail_text(data))
    return OK


def cmd_dead_rerun(ns: argparse.Namespace) -> int:
    if ns.all == bool(ns.id):
        raise CommandError("give a dead task's ID or --all (not both)", USAGE)

    async def rerun(inspector: Inspector) -> list[tuple[str, str]]:
        if ns.id:
            new_id = await inspector.rerun_dead(ns.queue, ns.id)
            if new_id is None:
                raise CommandError(
                    f"task {ns.id} is not a dead task of queue {ns.namespace}/{ns.queue}",
                    NOT_FOUND,
                )
            return [(ns.id, new_id)]
        return await inspector.rerun_all_dead(ns.queue)

    pairs = _run(ns, rerun)
    data = {"rerun": [{"id": old, "newId": new} for old, new in pairs]}
    emit(ns.output, data, ("ID", "NEW-ID"), lambda: pairs)
    return OK


def cmd_dead_delete(ns: argparse.Namespace) -> int:
    if not _run(ns, lambda i: i.delete_dead(ns.queue, ns.id)):
        raise CommandError(
            f"task {ns.id} is not a dead task of queue {ns.namespace}/{ns.queue}", NOT_FOUND
        )
    emit(ns.output, {"deleted": [ns.id]}, text=f"deleted {ns.id}")
    return OK


def cmd_dead_purge(ns: argparse.Namespace) -> int:
    count = _run(ns, lambda i: i.purge_dead(ns.queue))
    emit(ns.output, {"deleted": count}, text=f"deleted {count} dead tasks")
    return OK


def cmd_tasks_rerun(ns: argparse.Namespace) -> int:
    """A new Task from a finished-badly Task's spec, through the API (RBAC applies)."""
    from kubetasks.k8s.api import KubeApi
    from kubetasks.k8s.tasks import TaskApi, rerun_manifest

    async def go() -> dict[str, Any]:
        api = KubeApi()
        try:
            tasks = TaskApi(api)
            old = await tasks.get(ns.namespace, ns.name)
            if old is None:
                raise CommandError(f"task {ns.namespace}/{ns.name} not found", NOT_FOUND)
            phase = (old.get("status") or {}).get("phase")
            if phase not in RERUNNABLE_PHASES:
                raise CommandError(
                    f"task {ns.namespace}/{ns.name} is {phase or 'not started'}: only"
                    f" {', '.join(RERUNNABLE_PHASES)} Tasks are re-run"
                )
            return await tasks.create(ns.namespace, rerun_manifest(old))
        finally:
            await api.close()

    created = asyncio.run(go())
    name = created["metadata"]["name"]
    data = {"name": name, "namespace": ns.namespace, "rerunOf": ns.name}
    emit(ns.output, data, text=f"task {ns.namespace}/{name} created (rerun of {ns.name})")
    return OK


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``tasks`` and ``dead``; ``common`` adds --redis-url and -n to a parser."""

    def queue_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("-q", "--queue", default="default", help="queue (default: default)")

    def list_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--search", help="an id prefix, part of a handler name, or key=value (a label)"
        )
        p.add_argument("--limit", type=int, default=50, help="tasks per page (default 50)")
        p.add_argument("--cursor", help="where to go on (printed after a page that has more)")

    t = sub.add_parser("tasks", help="the tasks of a queue: list, show, re-run a Task resource")
    tsub = t.add_subparsers(dest="tasks_command", required=True, metavar="{list,show,rerun}")
    tl = tsub.add_parser("list", help="one page of the tasks of a queue in one state")
    common(tl)
    queue_flag(tl)
    tl.add_argument("-s", "--state", choices=STATES, default="pending")
    list_flags(tl)
    add_output_flag(tl)
    tl.set_defaults(func=cmd_tasks_list)

    ts = tsub.add_parser("show", help="one task: args, result, error, traceback, attempts")
    common(ts)
    queue_flag(ts)
    ts.add_argument("id", metavar="ID")
    add_output_flag(ts)
    ts.set_defaults(func=cmd_tasks_show)

    tr = tsub.add_parser(
        "rerun", help="a new Task from the spec of a Failed, Cancelled or DeadlineExceeded Task"
    )
    common(tr)
    tr.add_argument("name", metavar="NAME", help="the Task resource's name")
    add_output_flag(tr)
    tr.set_defaults(func=cmd_tasks_rerun)

    d = sub.add_parser("dead", help="tasks that failed for good: list, re-run, delete, purge")
    dsub = d.add_subparsers(dest="dead_command", required=True, metavar="{list,rerun,delete,purge}")
    dl = dsub.add_parser("list", help="one page of the dead tasks of a queue")
    common(dl)
    queue_flag(dl)
    list_flags(dl)
    add_output_flag(dl)
    dl.set_defaults(func=cmd_dead_list)

    dr = dsub.add_parser("rerun", help="run dead tasks again under new ids (old records kept)")
    common(dr)
    queue_flag(dr)
    dr.add_argument("id", metavar="ID", nargs="?")
    dr.add_argument("--all", action="store_true", help="every dead task of the queue")
    add_output_flag(dr)
    dr.set_defaults(func=cmd_dead_rerun)

    dd = dsub.add_parser("delete", help="remove one dead task and its record")
    common(dd)
    queue_flag(dd)
    dd.add_argument("id", metavar="ID")
    add_output_flag(dd)
    dd.set_defaults(func=cmd_dead_delete)

    dp = dsub.add_parser("purge", help="remove every dead task of the queue")
    common(dp)
    queue_flag(dp)
    add_output_flag(dp)
    dp.set_defaults(func=cmd_dead_purge)
