"""The dashboard's pages and actions (aiohttp), each behind a Kubernetes RBAC check.

Every request but the login page, the health check and the static files needs a bearer
token the API server accepts (TokenReview); every page and action then asks a
SubjectAccessReview for the user about the resource it touches, in the namespace it
touches:

=========================  ==========================================
overview, queue page       ``list tasks`` in the queue's namespace
task page                  ``get tasks``
re-run dead tasks          ``create tasks``
delete dead tasks          ``delete tasks``
pause, resume              ``patch queues``
WorkerPools page           ``list workerpools``
PeriodicTasks page         ``list periodictasks``
=========================  ==========================================

Tasks in Redis count as the Task resources of their namespace for this purpose, whether a
resource stands behind them or they came by the fast path. Reads and writes then go out
with the dashboard's own credentials (its service account), through the same code the CLI
uses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from importlib import resources as package_files
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from kubetasks.dashboard import security
from kubetasks.dashboard.sampler import Sampler
from kubetasks.dashboard.sparkline import rates, sparkline
from kubetasks.errors import BrokerUnavailableError
from kubetasks.k8s.api import ApiError, KubeApi, is_unavailable
from kubetasks.k8s.queues import QueueApi
from kubetasks.k8s.resources import ResourceReader
from kubetasks.k8s.reviews import Access, Reviewer, User
from kubetasks.queue.broker import Broker
from kubetasks.queue.inspector import STATES, Inspector
from kubetasks.queue.message import QueueSettings
from kubetasks.queuename import is_namespace, is_queue_name
from kubetasks.settings import worker_id_for_pod
from kubetasks.vocabulary import PERIODIC_TASKS, QUEUES, TASKS, WORKER_POOLS

log = logging.getLogger("kubetasks.dashboard")

PAGE_SIZE = 50
#: Paths anyone may open: the login form, the health check, the vendored script.
PUBLIC = ("/login", "/healthz", "/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER: web.RequestKey[User] = web.RequestKey("user", User)
TOKEN: web.RequestKey[str] = web.RequestKey("token", str)


class RefusedError(Exception):
    """The user may not do what the request asks (a 403 page names what is missing)."""

    def __init__(self, user: User, access: Access) -> None:
        super().__init__(f"{user.name} may not {access.describe()}")
        self.user, self.access = user, access


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kubetasks.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(age=_age, when=_when, pretty=_pretty)
    env.globals.update(sparkline=sparkline, urlencode=urlencode)
    return env


class Dashboard:
    """The application: ``Dashboard(broker, api).app()`` is an :class:`aiohttp.web.Application`
    whose sampler runs while it serves."""

    def __init__(
        self,
        broker: Broker,
        api: KubeApi,
        *,
        sample_interval: float = 10.0,
        review_ttl: float = 10.0,
        secure_cookie: bool = False,
        csrf_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.inspector = Inspector(broker)
        self.api = api
        self.reviewer = Reviewer(api, ttl=review_ttl)
        self.resources = ResourceReader(api)
        self.queues = QueueApi(api)
        self.sampler = Sampler(
            self.inspector, self.resources, interval=sample_interval, clock=clock
        )
        self.secure_cookie = secure_cookie
        self.csrf_key = csrf_key or os.urandom(32)
        self.clock = clock
        self.templates = _environment()

    # -- plumbing ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._authenticate])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/static/htmx.min.js", self.htmx)
        app.router.add_get("/", self.overview)
        app.router.add_get("/overview/table", self.overview_table)
        app.router.add_get("/pools", self.pools)
        app.router.add_get("/periodic", self.periodic)
        base = "/queues/{namespace}/{queue}"
        app.router.add_get(base, self.queue_page)
        app.router.add_get(base + "/tasks/{task_id}", self.task_page)
        app.router.add_post(base + "/dead/rerun", self.rerun_dead)
        app.router.add_post(base + "/dead/delete", self.delete_dead)
        app.router.add_post(base + "/pause", self.pause)
        app.router.add_post(base + "/resume", self.resume)
        app.cleanup_ctx.append(self._sampling)
        return app

    async def _sampling(self, _: web.Application) -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(self.sampler.run(stop))
        yield
        stop.set()
        await task

    def render(
        self, request: web.Request, name: str, status: int = 200, **context: Any
    ) -> web.Response:
        token = request.get(TOKEN)
        context.setdefault("user", request.get(USER))
        context.setdefault("csrf", security.csrf_token(self.csrf_key, token) if token else "")
        context.setdefault("flash", request.query.get("done", ""))
        context.setdefault("path", request.path)
        body = self.templates.get_template(name).render(**context)
        response = web.Response(text=body, status=status, content_type="text/html")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
            " frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RefusedError as exc:
            return self.render(request, "error.html", 403, title="Forbidden", message=str(exc))
        except BrokerUnavailableError as exc:
            return self.render(
                request, "error.html", 503, title="Redis unavailable", message=str(exc)
            )
        except ApiError as exc:
            status = 503 if is_unavailable(exc) else 502
            return self.render(
                request,
                "error.html",
                status,
                title="Kubernetes API error",
                message=f"{exc.status} {exc.reason}: {exc.message[:300]}",
            )

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and not security.same_origin(
            request.headers, f"{request.scheme}://{request.host}"
        ):
            return self.render(
                request,
                "error.html",
                403,
                title="Forbidden",
                message="cross-site request refused (Origin)",
            )
        if request.path.startswith(PUBLIC):
            return await handler(request)
        token = security.bearer(request.headers, request.cookies)
        if token is None:
            return self.render(
                request,
                "login.html",
                401,
                title="Log in",
                message="a Kubernetes bearer token is needed",
            )
        user = await self.reviewer.user(token)
        if user is None:
            return self.render(
                request,
                "login.html",
                401,
                title="Log in",
                message="the API server did not accept that token",
            )
        request[USER], request[TOKEN] = user, token
        if request.method == "POST":
            form = await request.post()
            if not security.csrf_ok(self.csrf_key, token, _field(form, "csrf")):
                return self.render(
                    request,
                    "error.html",
                    403,
                    title="Forbidden",
                    message="missing or wrong CSRF token",
                )
        return await handler(request)

    async def need(self, request: web.Request, access: Access) -> None:
        user = request[USER]
        if not await self.reviewer.allowed(user, access):
            raise RefusedError(user, access)

    async def may(self, request: web.Request, access: Access) -> bool:
        return await self.reviewer.allowed(request[USER], access)

    @staticmethod
    def _queue(request: web.Request) -> tuple[str, str]:
        namespace, queue = request.match_info["namespace"], request.match_info["queue"]
        if not is_namespace(namespace) or not is_queue_name(queue):
            raise web.HTTPBadRequest(text=f"not a namespace/queue name: {namespace}/{queue}")
        return namespace, queue

    # -- public --------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def htmx(self, _: web.Request) -> web.Response:
        script = package_files.files("kubetasks.dashboard").joinpath("static/htmx.min.js")
        response = web.Response(body=script.read_bytes(), content_type="application/javascript")
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        return self.render(request, "login.html", title="Log in", message="")

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = (_field(await request.post(), "token") or "").strip()
        if not token or await self.reviewer.user(token) is None:
            return self.render(
                request,
                "login.html",
                401,
                title="Log in",
                message="the API server did not accept that token",
            )
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            security.COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            path="/",
        )
        return response

    async def logout(self, _: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(security.COOKIE, path="/")
        return response

    # -- overview ------------------------------------------------------------------------

    async def _visible_namespaces(
        self, request: web.Request, namespaces: Iterable[str]
    ) -> set[str]:
        wanted = sorted(set(namespaces))
        verdicts = await asyncio.gather(
            *(self.may(request, Access("list", TASKS, ns)) for ns in wanted)
        )
        return {ns for ns, ok in zip(wanted, verdicts, strict=True) if ok}

    async def _overview_rows(self, request: web.Request) -> list[dict[str, Any]]:
        queues = await self.broker.all_queues()
        visible = await self._visible_namespaces(request, (ns for ns, _ in queues))
        rows = []
        for stats in await self.inspector.queue_overview(visible):
            series = list(self.sampler.queues.get((stats.namespace, stats.queue), ()))
            times = [s.at for s in series]
            throughput = rates(times, [s.processed for s in series])
            rows.append(
                {
                    "stats": stats,
                    "paused": bool(stats.settings and stats.settings.paused),
                    "throughput": next((r for r in reversed(throughput) if r is not None), None),
                    "spark_pending": sparkline([s.pending for s in series], label="pending"),
                    "spark_active": sparkline([s.active for s in series], label="running"),
                    "spark_dead": sparkline([s.dead for s in series], label="dead"),
                    "spark_rate": sparkline(throughput, label="done/min"),
                }
            )
        return rows

    async def overview(self, request: web.Request) -> web.Response:
        rows = await self._overview_rows(request)
        return self.render(request, "overview.html", title="Queues", rows=rows)

    async def overview_table(self, request: web.Request) -> web.Response:
        rows = await self._overview_rows(request)
        return self.render(request, "overview_table.html", rows=rows)

    # -- one queue -----------------------------------------------------------------------

    async def queue_page(self, request: web.Request) -> web.Response:
        namespace, queue = self._queue(request)
        await self.need(request, Access("list", TASKS, namespace))
        state = request.query.get("state", "pending")
        if state not in STATES:
            raise web.HTTPBadRequest(text=f"unknown state {state!r}: one of {', '.join(STATES)}")
        search = request.query.get("q", "").strip() or None
        cursor = request.query.get("cursor") or None
        if cursor is not None and not cursor.isdigit():
            raise web.HTTPBadRequest(text=f"bad cursor {cursor!r}")
        inspector = self.inspector.in_namespace(namespace)
        page, stats = await asyncio.gather(
            inspector.list_tasks(queue, state, cursor=cursor, limit=PAGE_SIZE, search=search),
            self.broker.in_namespace(namespace).stats(queue, detail=True),
        )
        following = None
        if page.cursor is not None:
            following = "?" + urlencode({"state": state, "q": search or "", "cursor": page.cursor})
        return self.render(
            request,
            "queue.html",
            title=f"{namespace}/{queue}",
            namespace=namespace,
            queue=queue,
            state=state,
            states=STATES,
            search=search or "",
            page=page,
            stats=stats,
            following=following,
            paused=bool(stats.settings and stats.settings.paused),
        )

    async def task_page(self, request: web.Request) -> web.Response:
        namespace, queue = self._queue(request)
        task_id = request.match_info["task_id"]
        await self.need(request, Access("get", TASKS, namespace))
        detail = await self.inspector.in_namespace(namespace).task(queue, task_id)
        if detail is None:
            return self.render(
                request,
                "error.html",
                404,
                title="Not found",
                message=f"no task {task_id} on queue {namespace}/{queue}",
            )
        return self.render(
            request,
            "task.html",
            title=f"task {task_id}",
            namespace=namespace,
            queue=queue,
            d=detail,
            info=detail.info,
        )

    # -- actions -------------------------------------------------------------------------

    def _back(self, namespace: str, queue: str, state: str, done: str) -> web.HTTPSeeOther:
        return web.HTTPSeeOther(
            f"/queues/{namespace}/{queue}?" + urlencode({"state": state, "done": done})
        )

    async def rerun_dead(self, request: web.Request) -> web.StreamResponse:
        namespace, queue = self._queue(request)
        await self.need(request, Access("create", TASKS, namespace))
        form = await request.post()
        inspector = self.inspector.in_namespace(namespace)
        if _field(form, "all"):
            pairs = await inspector.rerun_all_dead(queue)
            done = f"re-ran {len(pairs)} dead tasks"
        else:
            task_id = _field(form, "id") or ""
            new_id = await inspector.rerun_dead(queue, task_id)
            done = f"re-ran {task_id} as {new_id}" if new_id else f"{task_id} is not dead"
        return self._back(namespace, queue, "dead", done)

    async def delete_dead(self, request: web.Request) -> web.StreamResponse:
        namespace, queue = self._queue(request)
        await self.need(request, Access("delete", TASKS, namespace))
        form = await request.post()
        inspector = self.inspector.in_namespace(namespace)
        if _field(form, "all"):
            done = f"deleted {await inspector.purge_dead(queue)} dead tasks"
        else:
            task_id = _field(form, "id") or ""
            ok = await inspector.delete_dead(queue, task_id)
            done = f"deleted {task_id}" if ok else f"{task_id} is not dead"
        return self._back(namespace, queue, "dead", done)

    async def pause(self, request: web.Request) -> web.StreamResponse:
        return await self._set_paused(request, paused=True)

    async def resume(self, request: web.Request) -> web.StreamResponse:
        return await self._set_paused(request, paused=False)

    async def _set_paused(self, request: web.Request, *, paused: bool) -> web.StreamResponse:
        """Through the Queue resource where there is one (the operator applies it, and
        ``kubectl get queues`` shows it); else straight on the queue's settings in Redis."""
        namespace, queue = self._queue(request)
        await self.need(request, Access("patch", QUEUES, namespace, name=queue))
        if await self.queues.get(namespace, queue) is not None:
            await self.queues.set_paused(namespace, queue, paused)
            how = "Queue resource"
        else:
            broker = self.broker.in_namespace(namespace)
            current = await broker.settings(queue) or QueueSettings()
            await broker.configure(queue, replace(current, paused=paused))
            how = "Redis (no Queue resource)"
        word = "paused" if paused else "resumed"
        return self._back(
            namespace, queue, request.query.get("state", "pending"), f"{word} through the {how}"
        )

    # -- WorkerPools, PeriodicTasks ------------------------------------------------------

    async def _listable(self, request: web.Request, resource: str) -> list[str | None]:
        """Namespaces whose ``resource`` the user may list: [None] when cluster-wide, else
        each namespace with a queue (or ``?namespace=``) they may list it in."""
        if await self.may(request, Access("list", resource)):
            return [None]
        candidates = {ns for ns, _ in await self.broker.all_queues()}
        if request.query.get("namespace") and is_namespace(request.query["namespace"]):
            candidates.add(request.query["namespace"])
        verdicts = await asyncio.gather(
            *(self.may(request, Access("list", resource, ns)) for ns in sorted(candidates))
        )
        allowed: list[str | None] = [
            ns for ns, ok in zip(sorted(candidates), verdicts, strict=True) if ok
        ]
        if not allowed:
            raise RefusedError(request[USER], Access("list", resource))
        return allowed

    async def pools(self, request: web.Request) -> web.Response:
        rows = []
        for namespace in await self._listable(request, WORKER_POOLS):
            for pool in await self.resources.worker_pools(namespace):
                meta, spec = pool["metadata"], pool.get("spec") or {}
                status = pool.get("status") or {}
                ns, name = str(meta["namespace"]), str(meta["name"])
                pods = await self.resources.pool_pods(ns, name)
                loads = await self.broker.worker_loads([worker_id_for_pod(ns, p) for p in pods])
                series = list(self.sampler.pools.get((ns, name), ()))
                rows.append(
                    {
                        "namespace": ns,
                        "name": name,
                        "spec": spec,
                        "status": status,
                        "busy": sum(1 for v in loads.values() if v),
                        "idle": sum(1 for v in loads.values() if v == 0),
                        "silent": sum(1 for v in loads.values() if v is None),
                        "spark_desired": sparkline([s.desired for s in series], label="desired"),
                        "spark_replicas": sparkline([s.replicas for s in series], label="actual"),
                    }
                )
        return self.render(request, "pools.html", title="WorkerPools", rows=rows)

    async def periodic(self, request: web.Request) -> web.Response:
        rows = []
        for namespace in await self._listable(request, PERIODIC_TASKS):
            for item in await self.resources.periodic_tasks(namespace):
                meta = item["metadata"]
                ns, name = str(meta["namespace"]), str(meta["name"])
                runs = await self.resources.periodic_runs(ns, name)
                runs.sort(key=lambda r: r["metadata"].get("creationTimestamp", ""), reverse=True)
                rows.append(
                    {
                        "namespace": ns,
                        "name": name,
                        "spec": item.get("spec") or {},
                        "status": item.get("status") or {},
                        "runs": runs[:5],
                    }
                )
        return self.render(request, "periodic.html", title="PeriodicTasks", rows=rows)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def serve(
    broker: Broker,
    api: KubeApi,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    **options: Any,
) -> None:
    """Serve the dashboard on ``host:port`` until ``stop`` is set."""
    runner = web.AppRunner(Dashboard(broker, api, **options).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("dashboard on http://%s:%d/", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
