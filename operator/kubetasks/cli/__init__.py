"""The ``kubetasks`` command: run a worker, submit and inspect tasks, run the local dev env.

Every subcommand is a thin shell over the library: parse flags, build settings, call the
same code the Python API uses, print what happened (a table, or ``-o json|yaml``). Expected
failures print one line naming the problem and exit with the codes of
:mod:`kubetasks.cli.output` (1 failed, 2 usage, 3 not found, 4 unreachable, 5 forbidden),
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from kubetasks import __version__, logwriter
from kubetasks.cli import completion, output, tasks, tasksets
from kubetasks.cli.output import FAILED, NOT_FOUND, OK, CommandError, add_output_flag, emit
from kubetasks.client import Client, TaskRequest
from kubetasks.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    KubetasksError,
    TaskNotFoundError,
)
from kubetasks.metrics import WorkerMetrics
from kubetasks.metrics import serve as serve_metrics
from kubetasks.queue import Broker, QueueStats
from kubetasks.settings import (
    DEFAULT_HTTP_TIMEOUT,
    LOG_LEVEL,
    MAX_HTTP_TIMEOUT,
    NAMESPACE,
    PEERING_PRIORITY,
    POD_NAMESPACE,
    HttpSettings,
    WorkerSettings,
    parse_cidrs,
    parse_http_allow,
    parse_queues,
    redis_url,
    worker_namespace,
)
from kubetasks.settings import namespace as namespace_setting

Command = Callable[[argparse.Namespace], int]


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word is a string argument


def resolve_namespace(explicit: str | None) -> str:
    """The namespace a command addresses, as kubectl picks it: ``-n``, else
    ``$KUBETASKS_NAMESPACE`` or the pod's own, else the kubeconfig context's, else default."""
    if explicit or NAMESPACE.get() or POD_NAMESPACE.get():
        return namespace_setting(explicit)
    from kubetasks.k8s.api import context_namespace

    return namespace_setting(context_namespace())


def _setup_logging(level: str, *, kopf_outages: bool = False) -> None:
    logwriter.setup(
        getattr(logging, level.upper(), logging.INFO),
        "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if kopf_outages:  # the operator: kopf's per-attempt lines about the API server go
        from kubetasks.outages import KopfOutageFilter

        for handler in logging.getLogger().handlers:
            handler.addFilter(KopfOutageFilter())


# -- worker ----------------------------------------------------------------------------------


def cmd_worker(ns: argparse.Namespace) -> int:
    from kubetasks.worker import Worker, builtins, registry

    _setup_logging(ns.log_level)
    if ns.allow_shell:
        builtins.enable_shell()
    if ns.allow_http:
        builtins.enable_http(_http_settings(ns))
    elif ns.http_allow or ns.http_deny_cidrs:
        raise ConfigurationError("--http-allow and --http-deny-cidrs need --allow-http")
    registry.import_modules(m for arg in ns.imports for m in arg.split(",") if m)
    namespace = worker_namespace(ns.namespace)
    settings = WorkerSettings(
        queues=parse_queues(ns.queues),
        concurrency=ns.concurrency,
        strict_priority=ns.strict,
        lease_seconds=ns.lease,
        grace_period=ns.grace_period,
        **({"worker_id": ns.worker_id} if ns.worker_id else {}),
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        broker = Broker.from_url(redis_url(ns.redis_url), namespace=namespace)
        sink, api = _status_sink(ns.report_status)
        metrics = WorkerMetrics()
        serve_metrics(metrics.registry, ns.metrics_port)
        try:
            await Worker(broker, settings, sink=sink, metrics=metrics).run(stop)
        finally:
            await broker.close()
            if api is not None:
                await api.close()

    asyncio.run(serve())
    stuck = [t for t in threading.enumerate() if t.name.startswith("kubetasks-handler")]
    if stuck:
        # A sync handler still running past the grace period cannot be interrupted; its
        # task was handed back already, so leave without waiting for the thread.
        logging.getLogger("kubetasks.worker").warning(
            "%d handler threads still busy; exiting", len(stuck)
        )
        logging.shutdown()
        os._exit(0)
    return 0


def _http_settings(ns: argparse.Namespace) -> HttpSettings:
    names, networks = parse_http_allow(ns.http_allow)
    return HttpSettings(
        allow_hosts=names,
        allow_networks=networks,
        deny_networks=parse_cidrs(ns.http_deny_cidrs, "--http-deny-cidrs"),
        max_timeout=ns.http_max_timeout,
        default_timeout=min(DEFAULT_HTTP_TIMEOUT, ns.http_max_timeout),
    )


def _status_sink(mode: str) -> tuple[Any, Any]:
    """The Kubernetes status sink when asked for, or when credentials are at hand ("auto");
    tasks submitted straight to Redis carry no resource and are never reported."""
    if mode == "none":
        return None, None
    from kubetasks.k8s.api import KubeApi  # only workers that report need it
    from kubetasks.k8s.sink import ResourceStatusSink
    from kubetasks.k8s.status import TaskStatusWriter

    try:
        api = KubeApi()
    except ConfigurationError:
        if mode == "kubernetes":
            raise
        return None, None
    from kubetasks.settings import PROGRESS_INTERVAL_SECONDS

    interval = PROGRESS_INTERVAL_SECONDS.get()
    return ResourceStatusSink(TaskStatusWriter(api), progress_interval=interval), api


# -- operator --------------------------------------------------------------------------------


def cmd_operator(ns: argparse.Namespace) -> int:
    from kubetasks.controller import operator

    _setup_logging(ns.log_level, kopf_outages=True)
    standalone = ns.standalone or not ns.peering
    operator.run(
        namespaces=[] if ns.all_namespaces else ns.namespace,
        standalone=standalone,
        peering=None if standalone else ns.peering,
        liveness=f"http://0.0.0.0:{ns.health_port}/healthz" if ns.health_port else None,
        priority=PEERING_PRIORITY.get(),
        metrics_port=ns.metrics_port,
    )
    return 0


# -- producing and inspecting ------------------------------------------------------------------


def cmd_enqueue(ns: argparse.Namespace) -> int:
    request = TaskRequest(
        ns.handler,
        args=[_json_arg(a) for a in ns.args],
        kwargs=json.loads(ns.kwargs) if ns.kwargs else {},
        queue=ns.queue,
        priority=ns.priority,
        delay=ns.delay,
        max_retries=ns.max_retries,
        timeout=ns.timeout,
        unique_for=ns.unique_for,
        task_id=ns.id,
    )
    with Client(ns.redis_url, namespace=ns.namespace) as client:
        (handle,) = client.enqueue_many([request])
        if handle.outcome == "duplicate":
            print(
                f"duplicate: task {handle.duplicate_of} holds the same unique key", file=sys.stderr
            )
            return 1
        print(f"{handle.id}\t{handle.queue}\t{handle.outcome}")
        if ns.wait is not None:
            print(json.dumps(handle.result(timeout=ns.wait)))
    return 0


#: Columns of ``kubetasks queues``: header, then how to read it from a queue's stats.
_QUEUE_COLUMNS: tuple[tuple[str, Callable[[QueueStats], Any]], ...] = (
    ("NAMESPACE", lambda s: s.namespace),
    ("QUEUE", lambda s: s.queue),
    ("PAUSED", lambda s: bool(s.settings and s.settings.paused)),
    ("MAX-IN-FLIGHT", lambda s: s.settings and s.settings.max_in_flight),
    ("RATE", lambda s: s.settings and s.settings.rate),
    ("PENDING", lambda s: s.pending),
    ("SCHEDULED", lambda s: s.scheduled),
    ("DUE", lambda s: s.due),
    ("ACTIVE", lambda s: s.active),
    ("DEAD", lambda s: s.dead),
    ("PROCESSED", lambda s: s.processed),
    ("FAILED", lambda s: s.failed),
    ("OLDEST", lambda s: s.oldest_pending),
)


def _queue_json(stats: QueueStats) -> dict[str, Any]:
    settings = stats.settings
    return {
        "namespace": stats.namespace,
        "queue": stats.queue,
        "pending": stats.pending,
        "scheduled": stats.scheduled,
        "due": stats.due,
        "active": stats.active,
        "dead": stats.dead,
        "processed": stats.processed,
        "failed": stats.failed,
        "oldestPendingSeconds": stats.oldest_pending,
        "paused": bool(settings and settings.paused),
        "maxInFlight": settings.max_in_flight if settings else None,
        "rateLimit": (
            {"perSecond": settings.rate, "burst": settings.bucket_size}
            if settings and settings.rate
            else None
        ),
        "defaultTimeoutSeconds": settings.default_timeout if settings else None,
        "maxTimeoutSeconds": settings.max_timeout if settings else None,
        "retentionSeconds": settings.retention if settings else None,
    }


def cmd_queues(ns: argparse.Namespace) -> int:
    with Client(ns.redis_url, namespace=ns.namespace) as client:
        stats = client.queues(all_namespaces=ns.all_namespaces)
    emit(
        ns.output,
        [_queue_json(s) for s in stats],
        [name for name, _ in _QUEUE_COLUMNS],
        lambda: [[read(s) for _, read in _QUEUE_COLUMNS] for s in stats],
    )
    return OK


def cmd_pause(ns: argparse.Namespace) -> int:
    return _set_paused(ns, paused=True)


def cmd_resume(ns: argparse.Namespace) -> int:
    return _set_paused(ns, paused=False)


def _set_paused(ns: argparse.Namespace, *, paused: bool) -> int:
    """Pausing is the Queue resource's ``spec.paused``, so Kubernetes RBAC decides who may,
    the operator applies it, and ``kubectl get queues`` shows it."""
    from kubetasks.k8s.api import KubeApi
    from kubetasks.k8s.queues import QueueApi
    from kubetasks.queuename import validate_queue_name

    queue = validate_queue_name(ns.queue, "QUEUE")
    namespace = namespace_setting(ns.namespace)

    async def apply() -> None:
        api = KubeApi()
        try:
            await QueueApi(api).set_paused(namespace, queue, paused)
        finally:
            await api.close()

    asyncio.run(apply())
    data = {"namespace": namespace, "queue": queue, "paused": paused}
    emit(ns.output, data, text=f"queue {namespace}/{queue} {'paused' if paused else 'resumed'}")
    return OK


def cmd_status(ns: argparse.Namespace) -> int:
    with Client(ns.redis_url, namespace=ns.namespace) as client:
        info = client.status(ns.id, ns.queue)
    if info is None:
        raise CommandError(f"task {ns.id} not found on queue {ns.namespace}/{ns.queue}", NOT_FOUND)
    print(
        json.dumps(
            {
                "id": info.id,
                "queue": info.queue,
                "handler": info.message.handler,
                "state": info.state,
                "attempts": info.attempts,
                "worker": info.worker,
                "result": info.result,
                "error": info.error,
            },
            indent=2,
        )
    )
    return 0


def cmd_cancel(ns: argparse.Namespace) -> int:
    """0 when the task is cancelled or told to stop, 3 when no such task, 1 when it had
    ended already (its final state is printed)."""
    with Client(ns.redis_url, namespace=ns.namespace) as client:
        outcome = client.cancel(ns.id, ns.queue)
    if outcome == "missing":
        raise CommandError(f"task {ns.id} not found on queue {ns.namespace}/{ns.queue}", NOT_FOUND)
    emit(ns.output, {"id": ns.id, "queue": ns.queue, "outcome": outcome}, text=outcome)
    if outcome not in ("cancelled", "cancelling"):
        print(f"kubetasks: task {ns.id} had ended already ({outcome})", file=sys.stderr)
        return FAILED
    return OK


def cmd_dashboard(ns: argparse.Namespace) -> int:
    """Serve the web dashboard until SIGTERM or SIGINT; users log in with their own
    Kubernetes token, the dashboard's credentials (kubeconfig or service account) run the
    reviews and the reads."""
    from kubetasks.dashboard.app import serve
    from kubetasks.k8s.api import KubeApi
    from kubetasks.settings import (
        DASHBOARD_LISTEN,
        DASHBOARD_REVIEW_SECONDS,
        DASHBOARD_SAMPLE_SECONDS,
        DASHBOARD_SECURE_COOKIE,
    )

    _setup_logging(ns.log_level)
    host, port = DASHBOARD_LISTEN.parse(ns.listen) if ns.listen else DASHBOARD_LISTEN.get()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        broker = Broker.from_url(redis_url(ns.redis_url))
        api = KubeApi()
        try:
            await serve(
                broker,
                api,
                host,
                port,
                stop=stop,
                sample_interval=DASHBOARD_SAMPLE_SECONDS.get(),
                review_ttl=DASHBOARD_REVIEW_SECONDS.get(),
                secure_cookie=DASHBOARD_SECURE_COOKIE.get(),
            )
        finally:
            await broker.close()
            await api.close()

    asyncio.run(run())
    return OK


def cmd_completion(ns: argparse.Namespace) -> int:
    sys.stdout.write(completion.SCRIPTS[ns.shell])
    return OK


def cmd_complete(ns: argparse.Namespace) -> int:
    for word in completion.candidates(build_parser(), ns.words):
        print(word)
    return OK


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetasks", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kubetasks {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def redis_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--redis-url", help="Redis URL (default: $KUBETASKS_REDIS_URL)")

    def namespace_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-n",
            "--namespace",
            help="namespace of the queue (default: $KUBETASKS_NAMESPACE, the pod's, the"
            " kubeconfig context's, or default)",
        )
        p.set_defaults(resolve_namespace=True)

    def common(p: argparse.ArgumentParser) -> None:
        redis_flag(p)
        namespace_flag(p)

    w = sub.add_parser("worker", help="run handlers for the tasks of some queues")
    redis_flag(w)
    w.add_argument(
        "--namespace",
        help="namespace whose queues to serve, outside a pod (in a pod: always the pod's own)",
    )
    w.add_argument("--queues", default="default", help="queues with weights: high:3,default:1")
    w.add_argument("--strict", action="store_true", help="serve queues strictly by weight")
    w.add_argument("--concurrency", type=int, default=10, help="tasks run at once (default 10)")
    w.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        help="module(s) whose @kubetasks.task handlers to load (repeatable)",
    )
    w.add_argument("--lease", type=float, default=30.0, help="lease seconds (default 30)")
    w.add_argument(
        "--grace-period",
        type=float,
        default=25.0,
        help="seconds running tasks get to finish after SIGTERM (default 25)",
    )
    w.add_argument("--worker-id", help="worker identity (default: $POD_NAME or host-pid)")
    w.add_argument("--allow-shell", action="store_true", help="register kubetasks.shell")
    w.add_argument(
        "--allow-http",
        action="store_true",
        help="register kubetasks.http (public addresses only, unless --http-allow)",
    )
    w.add_argument(
        "--http-allow",
        action="append",
        default=[],
        metavar="NAME|CIDR",
        help="host names or CIDRs kubetasks.http may reach although they are loopback,"
        " private, link-local or denied (repeatable, comma-separated)",
    )
    w.add_argument(
        "--http-deny-cidrs",
        action="append",
        default=[],
        metavar="CIDR",
        help="more ranges kubetasks.http refuses, e.g. the cluster's Service and pod CIDRs"
        " when they are public (repeatable, comma-separated)",
    )
    w.add_argument(
        "--http-max-timeout",
        type=float,
        default=MAX_HTTP_TIMEOUT,
        help="most seconds one kubetasks.http request may take (default 60)",
    )
    w.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics (0: off)")
    w.add_argument(
        "--report-status",
        choices=("auto", "kubernetes", "none"),
        default="auto",
        help="write Task status to Kubernetes (auto: when credentials are available)",
    )
    w.add_argument("--log-level", default=LOG_LEVEL.get())
    w.set_defaults(func=cmd_worker)

    o = sub.add_parser("operator", help="run the kopf operator (Tasks, PeriodicTasks, pools)")
    o.add_argument("--namespace", action="append", default=[], help="watch only this namespace")
    o.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    o.add_argument("--peering", help="kopf peering object name (default: standalone)")
    o.add_argument("--standalone", action="store_true", help="no peering (one operator)")
    o.add_argument("--health-port", type=int, default=8080, help="liveness endpoint port")
    o.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)"
    )
    o.add_argument("--log-level", default=LOG_LEVEL.get())
    o.set_defaults(func=cmd_operator)

    e = sub.add_parser("enqueue", help="submit one task straight to Redis")
    redis_flag(e)
    namespace_flag(e)
    e.add_argument("handler")
    e.add_argument("args", nargs="*", help="positional arguments, each JSON or a bare string")
    e.add_argument("--kwargs", help="keyword arguments as a JSON object")
    e.add_argument("--queue", default="default")
    e.add_argument("--priority", type=int, default=0)
    e.add_argument("--delay", type=float, help="seconds before it may start")
    e.add_argument("--max-retries", type=int, default=3)
    e.add_argument("--timeout", type=float, help="seconds one attempt may run")
    e.add_argument("--unique-for", type=int, help="refuse duplicates for this many seconds")
    e.add_argument("--id", help="task id (default: a random UUID)")
    e.add_argument("--wait", type=float, metavar="SECONDS", help="wait for and print the result")
    e.set_defaults(func=cmd_enqueue)

    q = sub.add_parser("queues", help="depth, counters and settings of every queue")
    redis_flag(q)
    namespace_flag(q)
    q.add_argument("-A", "--all-namespaces", action="store_true", help="queues of every namespace")
    add_output_flag(q)
    q.set_defaults(func=cmd_queues)

    for name, func, what in (
        ("pause", cmd_pause, "start no task of QUEUE until resumed (running ones finish)"),
        ("resume", cmd_resume, "let QUEUE start tasks again"),
    ):
        p = sub.add_parser(name, help=f"{what}: sets the Queue resource's spec.paused")
        namespace_flag(p)
        p.add_argument("queue", metavar="QUEUE")
        add_output_flag(p)
        p.set_defaults(func=func)

    s = sub.add_parser("status", help="one task's state, result or error")
    redis_flag(s)
    namespace_flag(s)
    s.add_argument("id")
    s.add_argument("--queue", default="default")
    s.set_defaults(func=cmd_status)

    c = sub.add_parser("cancel", help="cancel a task (a running one is told to stop)")
    redis_flag(c)
    namespace_flag(c)
    c.add_argument("id")
    c.add_argument("-q", "--queue", default="default")
    add_output_flag(c)
    c.set_defaults(func=cmd_cancel)

    d = sub.add_parser("dashboard", help="serve the web dashboard (log in with a Kubernetes token)")
    redis_flag(d)
    d.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to serve (default: $KUBETASKS_DASHBOARD_LISTEN or 127.0.0.1:8080)",
    )
    d.add_argument("--log-level", default=LOG_LEVEL.get())
    d.set_defaults(func=cmd_dashboard)

    tasks.register(sub, common)
    tasksets.register(sub, common)

    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    comp.add_argument("shell", choices=sorted(completion.SCRIPTS))
    comp.set_defaults(func=cmd_completion)
    hidden = sub.add_parser("__complete")  # what the completion scripts call
    hidden.add_argument("words", nargs=argparse.REMAINDER)
    hidden.set_defaults(func=cmd_complete)

    _register_optional(sub)
    sub.metavar = "{" + ",".join(n for n in sub.choices if not n.startswith("_")) + "}"
    return parser


def _register_optional(sub: Any) -> None:
    """Subcommands that other distributions or packages add (entry point group
    ``kubetasks.commands``): ``kubetasks dev`` comes from the ``devenv`` package of a source
    checkout, which the images do not contain, so the product never imports it."""
    for entry in entry_points(group="kubetasks.commands"):
        try:
            register = entry.load()
        except ImportError:
            continue  # declared by the installed metadata but not shipped (the images)
        register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    func: Command = ns.func
    try:
        if getattr(ns, "resolve_namespace", False):
            ns.namespace = resolve_namespace(ns.namespace)
        return func(ns)
    except Exception as exc:
        code, message = _failure(exc)
        if code is None:
            raise
        print(f"kubetasks: {message}", file=sys.stderr)
        return code


def _failure(exc: Exception) -> tuple[int | None, str]:
    """The exit code and message of an expected failure (None: a bug, let it show)."""
    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, BrokerUnavailableError):
        return output.UNREACHABLE, str(exc)
    if isinstance(exc, ConnectionError):
        return output.UNREACHABLE, f"Redis is unreachable: {exc}"
    if isinstance(exc, ConfigurationError | ValueError):
        return output.USAGE, str(exc)
    if isinstance(exc, TaskNotFoundError):
        return output.NOT_FOUND, str(exc)
    if "kubetasks.k8s.api" in sys.modules:  # only commands that talk to Kubernetes load it
        from kubetasks.k8s import api

        if isinstance(exc, api.ForbiddenError):
            return output.FORBIDDEN, f"forbidden by the Kubernetes API: {exc.message}"
        if isinstance(exc, api.NotFoundError):
            return output.NOT_FOUND, f"not found: {exc.message}"
        if api.is_unavailable(exc):
            return output.UNREACHABLE, f"the Kubernetes API is unreachable: {api.reason_text(exc)}"
        if isinstance(exc, api.ApiError):
            return output.FAILED, api.reason_text(exc)
    if isinstance(exc, KubetasksError):
        return output.FAILED, str(exc)
    return None, ""


if __name__ == "__main__":
    sys.exit(main())
