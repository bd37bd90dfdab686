"""The dashboard's guards seen from HTTP, against the dashboard process, real Redis and the
real API server: TokenReview for every request, a SubjectAccessReview for every read and
action, and POSTs that must carry the session's CSRF token and come from its own origin."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from fixtures.dashboard import OPERATOR_RULES, VIEWER_RULES, DashboardProcess, UserToken
from fixtures.operator import StartWorkers
from kubetasks.client import AsyncClient


async def _csrf(session: aiohttp.ClientSession, url: str, token: str) -> str:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text())
    assert found is not None
    return found.group(1)


async def test_actions_need_rights_a_csrf_token_and_the_dashboards_own_origin(
    dashboard: DashboardProcess, user_token: UserToken, redis_url: str, namespace: str,
    task_workers: StartWorkers,
) -> None:  # fmt: skip
    task_workers(1, queues="q")
    client = AsyncClient(redis_url, namespace=namespace)
    handle = await client.enqueue("kubetasks.fail", queue="q", max_retries=0)
    deadline = time.monotonic() + 20
    while (info := await handle.status()) is None or info.state != "failed":
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    await client.close()
    oncall, viewer = user_token("oncall", OPERATOR_RULES), user_token("viewer", VIEWER_RULES)
    page = f"{dashboard.url}/queues/{namespace}/q"
    action = f"{page}/dead/delete"
    origin = {"Origin": dashboard.url}
    async with aiohttp.ClientSession() as s:
        async with s.get(page) as r:
            assert r.status == 401
        async with s.get(page, headers={"Authorization": "Bearer nonsense"}) as r:
            assert r.status == 401
            assert "did not accept that token" in await r.text()

        # The viewer reads the queue but may not delete: the SubjectAccessReview says no.
        csrf = await _csrf(s, page, viewer)
        async with s.post(
            action, data={"csrf": csrf, "id": handle.id},
            headers={"Authorization": f"Bearer {viewer}", **origin}, allow_redirects=False,
        ) as r:  # fmt: skip
            assert r.status == 403
            assert "may not delete tasks.kubetasks.dev in namespace " + namespace in await r.text()

        bearer = {"Authorization": f"Bearer {oncall}"}
        csrf = await _csrf(s, page, oncall)
        for headers, data, why in (
            (bearer | origin, {"id": handle.id}, "missing or wrong CSRF token"),
            (bearer | origin, {"id": handle.id, "csrf": "0" * 64}, "missing or wrong CSRF token"),
            (bearer, {"id": handle.id, "csrf": csrf}, "cross-site request refused"),
            (bearer | {"Origin": "http://evil.example"}, {"id": handle.id, "csrf": csrf},
             "cross-site request refused"),
        ):  # fmt: skip
            async with s.post(action, data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == 403, why
                assert why in await r.text()
        # Refused requests changed nothing: the task is still dead, and the real one works.
        async with s.get(page + "?state=dead", headers=bearer) as r:
            assert handle.id in await r.text()
        async with s.post(
            action, data={"id": handle.id, "csrf": csrf}, headers=bearer | origin,
            allow_redirects=False,
        ) as r:  # fmt: skip
            assert r.status == 303
            assert "deleted" in r.headers["Location"]
        async with s.get(page + "?state=dead", headers=bearer) as r:
            assert handle.id not in await r.text()
