"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the
dashboard process, real Redis, the real API server (users are service accounts with RBAC
rights, logging in with their tokens) and a real worker process.

Each page is kept as a screenshot under the artifacts directory (printed as the test runs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from fixtures.dashboard import OPERATOR_RULES, DashboardProcess, UserToken
from fixtures.operator import StartWorkers
from kubetasks.client import Client, TaskRequest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make chromium` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def shot(page: Page, artifacts: Path, name: str) -> None:
    path = artifacts / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def log_in(page: Page, dashboard: DashboardProcess, token: str) -> None:
    page.goto(dashboard.url + "/")
    expect(page.locator("h1")).to_have_text("Log in")  # no token yet: the login page, a 401
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Queues")


def enqueue(redis_url: str, namespace: str, *requests: TaskRequest) -> list[str]:
    """Submit by the fast path, from a thread of its own: Playwright's sync API keeps an
    event loop running in this one, where the sync Client refuses to work."""

    def submit() -> list[str]:
        with Client(redis_url, namespace=namespace) as client:
            return [h.id for h in client.enqueue_many(requests)]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(submit).result()


def wait_for_state(page: Page, url: str, task_id: str, state: str, timeout: float = 20) -> None:
    """Reload the task's page until it shows ``state`` (what a user refreshing does)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if page.locator("#state").text_content() == state:
            return
        if time.monotonic() > deadline:
            shown = page.locator("#state").text_content()
            raise AssertionError(f"task {task_id} not {state}: {shown}")
        time.sleep(0.3)


def test_an_operator_watches_tasks_succeed_reads_a_traceback_and_reruns_a_dead_task(
    page: Page, dashboard: DashboardProcess, user_token: UserToken, task_workers: StartWorkers,
    redis_url: str, namespace: str, artifacts: Path, tmp_path: Path,
) -> None:  # fmt: skip
    task_workers(1, queues="web")
    marker = tmp_path / "present.txt"
    ok_id, failing_id = enqueue(
        redis_url, namespace,
        TaskRequest("kubetasks.echo", args=["hello"], queue="web"),
        TaskRequest("test.needs_file", args=[str(marker)], queue="web", max_retries=0),
    )  # fmt: skip
    log_in(page, dashboard, user_token("oncall", OPERATOR_RULES))
    row = page.locator(f'tr[data-queue="{namespace}/web"]')
    expect(row).to_be_visible()
    shot(page, artifacts, "overview")

    base = f"{dashboard.url}/queues/{namespace}/web"
    wait_for_state(page, f"{base}/tasks/{ok_id}", ok_id, "succeeded")
    expect(page.locator("#result")).to_contain_text('"hello"')
    shot(page, artifacts, "task-succeeded")

    wait_for_state(page, f"{base}/tasks/{failing_id}", failing_id, "failed")
    expect(page.locator("#traceback")).to_contain_text("FileNotFoundError")
    expect(page.locator("#traceback")).to_contain_text("Traceback")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#attempts tbody tr").first).to_contain_text("worker-0")
    shot(page, artifacts, "task-failed")

    page.goto(f"{base}?state=dead")
    dead_row = page.locator(f'tr[data-id="{failing_id}"]')
    expect(dead_row).to_be_visible()
    shot(page, artifacts, "queue-dead")
    marker.write_text("now it is here")
    dead_row.locator("button.rerun").click()
    expect(page.locator("#flash")).to_contain_text(f"re-ran {failing_id} as ")
    new_id = re.sub(r".* as ", "", page.locator("#flash").text_content() or "")
    wait_for_state(page, f"{base}/tasks/{new_id}", new_id, "succeeded")
    expect(page.locator("#result")).to_contain_text("now it is here")
    expect(page.locator(f'dd a[href$="/tasks/{failing_id}"]')).to_be_visible()  # re-run of
    shot(page, artifacts, "task-rerun-succeeded")

    page.goto(f"{base}?state=succeeded")
    expect(page.locator("#tasks tbody tr")).to_have_count(2)
    page.goto(f"{base}?state=succeeded&q=kubetasks.echo")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-id="{ok_id}"]')).to_be_visible()
    shot(page, artifacts, "queue-search")

    page.goto(dashboard.url + "/")  # the throughput sampled meanwhile (a sample a second)
    expect(row.locator(".dead")).to_have_text("0")
    page.goto(dashboard.url + "/pools")
    expect(page.locator("h1")).to_have_text("WorkerPools")
    shot(page, artifacts, "pools")
    page.goto(dashboard.url + "/periodic")
    expect(page.locator("h1")).to_have_text("PeriodicTasks")
    shot(page, artifacts, "periodic")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(dashboard.url + "/")
    expect(row).to_be_visible()
    shot(page, artifacts, "overview-phone")


def test_a_paused_queue_starts_nothing_until_resumed(
    page: Page, dashboard: DashboardProcess, user_token: UserToken, task_workers: StartWorkers,
    redis_url: str, namespace: str, artifacts: Path,
) -> None:  # fmt: skip
    task_workers(1, queues="slow")
    (first,) = enqueue(redis_url, namespace, TaskRequest("kubetasks.echo", args=[1], queue="slow"))
    log_in(page, dashboard, user_token("oncall", OPERATOR_RULES))
    base = f"{dashboard.url}/queues/{namespace}/slow"
    wait_for_state(page, f"{base}/tasks/{first}", first, "succeeded")

    page.goto(base)
    page.click("#pause-toggle")
    expect(page.locator("#flash")).to_contain_text("paused through the Redis (no Queue resource)")
    expect(page.locator("#paused")).to_have_text("paused")
    (held,) = enqueue(redis_url, namespace, TaskRequest("kubetasks.echo", args=[2], queue="slow"))
    time.sleep(3)  # a worker idle on the queue would have started it within milliseconds
    page.goto(f"{base}/tasks/{held}")
    expect(page.locator("#state")).to_have_text("pending")
    page.goto(base)
    expect(page.locator(f'tr[data-id="{held}"] .state')).to_have_text("pending")
    shot(page, artifacts, "queue-paused")

    page.click("#pause-toggle")
    expect(page.locator("#flash")).to_contain_text("resumed")
    wait_for_state(page, f"{base}/tasks/{held}", held, "succeeded")


def test_a_user_without_rights_is_refused(
    page: Page, dashboard: DashboardProcess, user_token: UserToken, redis_url: str,
    namespace: str, artifacts: Path,
) -> None:  # fmt: skip
    enqueue(redis_url, namespace, TaskRequest("kubetasks.echo", queue="private"))
    page.goto(dashboard.url + "/")
    expect(page.locator("#error")).to_contain_text("a Kubernetes bearer token is needed")
    shot(page, artifacts, "login")
    page.fill("input[name=token]", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#error")).to_contain_text("did not accept that token")

    log_in(page, dashboard, user_token("nobody", ()))
    expect(page.locator(f'tr[data-queue="{namespace}/private"]')).to_have_count(0)
    response = page.goto(f"{dashboard.url}/queues/{namespace}/private")
    assert response is not None and response.status == 403
    expect(page.locator("#error")).to_contain_text(
        f"system:serviceaccount:{namespace}:nobody may not list tasks.kubetasks.dev in"
        f" namespace {namespace}"
    )
    shot(page, artifacts, "refused")
