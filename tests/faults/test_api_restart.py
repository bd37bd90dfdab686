"""The kube-apiserver process itself restarted in the middle of a burst, as a rollout does
(SIGTERM, then a new process with the same arguments, port, certificates and etcd): every
Task Succeeded within seconds of the new server being ready, nothing ran twice, and each
process tells the outage in at most two lines.

Unlike ``test_api_outage`` (a proxy cut in front of a server that stays up), the operator
and the worker talk to the API server directly: their connections and watches end with the
old process, and the new one starts with an empty watch cache, so a watch resumed from a
resourceVersion of the old one may be told it is gone (410) and list again.

The module has a control plane of its own: restarting the session's would hurt the tests
that share it. The repair's resync is far beyond the test (``PRIMARY_PATH_RESYNC``) and the
test checks that no sweep ran and no outcome was repaired: a status that arrives only
through repair fails it. Tasks record every run (``test.tally``: task id and pid).
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client as k8s
from recovery import runs_by_uid, seconds_until_succeeded

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from fixtures.controlplane import CRDS
from fixtures.operator import PRIMARY_PATH_RESYNC, Operator, Process, Tasks, kube_env

pytestmark = pytest.mark.controlplane

#: Tasks in a burst, how long each runs, and the worker's concurrency: about 6 s of work,
#: most of it done while the API server is away.
BURST, RUN_SECONDS, CONCURRENCY = 60, 1.0, 10
#: Seconds the API server stays stopped between the old process's exit and the new one's
#: start; its shutdown and start-up come on top.
DOWN_SECONDS = 5.0
#: The bound of the issue: every Task Succeeded this long after the fault ends (here: the
#: new API server is ready).
RECOVERY_SECONDS = 5.0
#: Log lines a process may spend on one outage (its start and its end).
OUTAGE_LINES = 2
REPAIR_METRICS = (
    "kubetasks_operator_repair_sweeps_total",
    "kubetasks_operator_repaired_outcomes_total",
    "kubetasks_operator_restored_tasks_total",
)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own, CRDs applied, with one namespace for Tasks."""
    with ControlPlane(tmp_path_factory.mktemp("restarted-plane")) as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), CRDS)
            k8s.CoreV1Api(api).create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="restart"))
            )
        yield plane


@dataclass
class Stack:
    plane: ControlPlane
    operator: Operator
    worker: Process
    tasks: Tasks
    tally: Path

    def runs(self) -> collections.Counter[str]:
        return runs_by_uid(self.tally)

    def create(self, names: list[str], seconds: float) -> None:
        for name in names:
            self.tasks.create(name, "test.tally", args=[str(self.tally), seconds])

    def succeeded(self) -> dict[str, str]:
        """uid -> name of every Task shown Succeeded."""
        return {t["metadata"]["uid"]: t["metadata"]["name"] for t in self.tasks.list()
                if (t.get("status") or {}).get("phase") == "Succeeded"}  # fmt: skip

    def finished_at(self) -> dict[str, float]:
        """name -> when its attempt ended (``status.finishedAt``, epoch seconds)."""
        ends = {t["metadata"]["name"]: (t.get("status") or {}).get("finishedAt")
                for t in self.tasks.list()}  # fmt: skip
        return {n: datetime.fromisoformat(at).timestamp() for n, at in ends.items() if at}

    def repair(self) -> dict[str, float]:
        metrics = self.operator.metrics()
        return {name: metrics.get(name, 0.0) for name in REPAIR_METRICS}


@pytest.fixture
def stack(plane: ControlPlane, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    env = kube_env(plane, redis_url)
    assert env["KUBETASKS_RESYNC_SECONDS"] == PRIMARY_PATH_RESYNC
    operator = Operator(env, tmp_path / "operator.log", "restart")
    worker_env = env | {"POD_NAME": "worker-0", "POD_NAMESPACE": "restart"}
    argv = [sys.executable, "-m", "kubetasks.cli", "worker", "--queues", "default",
            "--concurrency", str(CONCURRENCY), "--import", "handlers_for_tests",
            "--report-status", "kubernetes", "--log-level", "info"]  # fmt: skip
    worker = Process(argv, worker_env, tmp_path / "worker.log")
    with plane.api_client() as api:
        yield Stack(plane, operator, worker, Tasks(api, "restart"), tmp_path / "tally")
    worker.stop()
    operator.stop()


def outage_lines(path: Path, since: int) -> list[str]:
    """Warnings and errors written after ``since`` characters (the outage's, or others)."""
    text = path.read_text()[since:]
    return [line for line in text.splitlines()
            if " WARNING " in line or " ERROR " in line or "Traceback" in line]  # fmt: skip


def test_restart_apiserver_keeps_the_address_and_the_data(plane: ControlPlane) -> None:
    with plane.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespaced_config_map(
            "restart", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="kept"), data={"a": "1"})
        )
        server, pid = plane.server, plane.pids()["kube-apiserver"]
        restart = plane.restart_apiserver(down=1.0)
        assert plane.server == server
        assert plane.pids()["kube-apiserver"] != pid
        assert plane.healthy()
        # The client made before the restart reaches the new process, TLS checked as before.
        assert core.read_namespaced_config_map("kept", "restart").data == {"a": "1"}
        core.delete_namespaced_config_map("kept", "restart")
    assert restart.down >= 1.0
    # Its graceful shutdown ends by itself, open watches and all, not at the 30 s SIGKILL.
    assert restart.stopping < 10
    assert restart.unavailable == restart.stopping + restart.down + restart.starting
    assert 0 < restart.answering <= restart.starting
    print(
        f"\nkube-apiserver restart: {restart.stopping:.1f} s to stop; answering"
        f" {restart.answering:.1f} s, ready {restart.starting:.1f} s after its start"
    )


def test_an_api_server_restart_mid_burst_ends_with_all_work_done_in_seconds_and_two_lines(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    names = [f"burst-{i:03d}" for i in range(BURST)]
    stack.create(names, RUN_SECONDS)
    deadline = time.monotonic() + 60
    while len(stack.succeeded()) < BURST // 4:
        assert time.monotonic() < deadline, "the burst never got going"
        time.sleep(0.05)
    finished_before = set(stack.succeeded())
    repair_before = stack.repair()
    marks = {p: p.log.stat().st_size for p in (stack.operator, stack.worker)}

    went = time.time()
    restart = stack.plane.restart_apiserver(down=DOWN_SECONDS)
    ready, back = time.monotonic(), time.time() - (restart.starting - restart.answering)
    # Created once the new server is ready: only the operator's resumed watch tells it.
    after = [f"after-{i}" for i in range(5)]
    stack.create(after, 0)
    took = (time.monotonic() - ready) + seconds_until_succeeded(
        stack.tasks, [*names, *after], RECOVERY_SECONDS + 25
    )

    runs = stack.runs()
    succeeded = stack.succeeded()
    again = {succeeded.get(uid, uid) for uid, n in runs.items() if n > 1}
    told = {p.log.name: outage_lines(p.log, marks[p]) for p in (stack.operator, stack.worker)}
    repair_after = stack.repair()
    # Ended while no API server answered: each status waited in the worker for its return.
    away = sum(went <= at <= back for at in stack.finished_at().values())
    print(f"\nkube-apiserver down {restart.unavailable:.1f} s (stop {restart.stopping:.1f} s,"
          f" down {restart.down:.1f} s, ready {restart.starting:.1f} s after its start):"
          f" {away} Tasks ended while it was away; all {BURST + len(after)} Succeeded"
          f" {took:.2f} s after it was ready"
          f" ({took + restart.starting - restart.answering:.2f} s after its first answer);"
          f" {len(again)} ran twice; outage lines"
          f" {', '.join(f'{k} {len(v)}' for k, v in told.items())}")  # fmt: skip
    record_property("unavailable_seconds", round(restart.unavailable, 2))
    record_property("apiserver_ready_seconds", round(restart.starting, 2))
    record_property("ended_while_away", away)
    record_property("recovery_seconds", round(took, 2))
    record_property("ran_twice", len(again))
    assert away > 0, "no Task ended while the API server was away: nothing was tested"
    assert took <= RECOVERY_SECONDS
    finished_again = {succeeded[uid] for uid in finished_before if runs[uid] > 1}
    assert not finished_again, f"finished Tasks ran again: {finished_again}"
    assert not again, f"an API server restart makes nothing run twice: {again}"
    assert sum(runs.values()) == BURST + len(after)
    assert repair_after == repair_before, "a status came through the repair sweep"
    for log, lines in told.items():
        assert len(lines) <= OUTAGE_LINES, f"{log}: {lines}"
