"""Every Redis-side command of ``kubetasks``, run as a user runs it, against a real Redis:
what it prints (table, JSON, YAML) and the exit code a script can rely on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import yaml

from kubetasks.cli import main
from kubetasks.queue import Broker, TaskMessage

NS = "team-a"


@pytest.fixture(autouse=True)
def environment(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    monkeypatch.setenv("KUBETASKS_REDIS_URL", redis_url)
    for name in ("KUBETASKS_NAMESPACE", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    yield


class Team:
    """Calls on a broker of namespace NS, each in its own event loop: the commands under
    test run their own (``asyncio.run``, the sync client), so the tests are plain functions."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            async def go() -> Any:
                broker = Broker.from_url(self.url, namespace=NS)
                try:
                    return await getattr(broker, name)(*args, **kwargs)
                finally:
                    await broker.close()

            return asyncio.run(go())

        return call


@pytest.fixture
def team(redis_url: str) -> Team:
    return Team(redis_url)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fill(broker: Team) -> None:
    """A queue 'jobs' with two pending tasks, one running, one dead (with a traceback)."""
    broker.enqueue(
        [
            TaskMessage(id="t-dead", handler="jobs.resize", queue="jobs", max_retries=0, args=[3]),
            TaskMessage(id="t-run", handler="jobs.resize", queue="jobs"),
            TaskMessage(id="t-a", handler="jobs.resize", queue="jobs", labels={"team": "x"}),
            TaskMessage(id="t-b", handler="mail.send", queue="jobs"),
        ]
    )
    broker.dequeue("jobs", "pod-1", 2, 60)
    error = {"type": "ValueError", "message": "bad size", "traceback": "Traceback (most...)\n"}
    broker.fail("jobs", "pod-1", "t-dead", 1, "failed", json.dumps(error))


def test_queues_as_table_json_and_yaml(team: Team, capsys: Any) -> None:
    fill(team)
    code, out, _ = run(capsys, "queues", "-n", NS)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAMESPACE", "QUEUE", "PAUSED"]
    assert row.split()[:2] == [NS, "jobs"]
    code, out, _ = run(capsys, "queues", "-n", NS, "-o", "json")
    (q,) = json.loads(out)
    assert (q["queue"], q["pending"], q["active"], q["dead"]) == ("jobs", 2, 1, 1)
    code, out, _ = run(capsys, "queues", "-n", NS, "-o", "yaml")
    assert yaml.safe_load(out)[0]["dead"] == 1
    code, out, _ = run(capsys, "queues", "-n", "other", "-o", "json")
    assert (code, json.loads(out)) == (0, [])


def test_tasks_list_by_state_with_search_and_paging(team: Team, capsys: Any) -> None:
    fill(team)
    code, out, _ = run(capsys, "tasks", "list", "-n", NS, "-q", "jobs", "-o", "json")
    page = json.loads(out)
    assert code == 0
    assert [t["id"] for t in page["tasks"]] == ["t-a", "t-b"]
    assert (page["total"], page["cursor"]) == (2, None)

    code, out, err = run(capsys, "tasks", "list", "-n", NS, "-q", "jobs", "--limit", "1")
    assert out.splitlines()[0].split() == [
        "ID",
        "STATE",
        "HANDLER",
        "ATTEMPTS",
        "ENQUEUED",
        "ERROR",
    ]
    assert out.splitlines()[1].split()[:3] == ["t-a", "pending", "jobs.resize"]
    assert "(more: --cursor 1)" in err
    code, out, _ = run(
        capsys,
        "tasks",
        "list",
        "-n",
        NS,
        "-q",
        "jobs",
        "--limit",
        "1",
        "--cursor",
        "1",
        "-o",
        "json",
    )
    assert [t["id"] for t in json.loads(out)["tasks"]] == ["t-b"]

    for search, expected in (("mail", ["t-b"]), ("team=x", ["t-a"]), ("t-", ["t-a", "t-b"])):
        code, out, _ = run(
            capsys, "tasks", "list", "-n", NS, "-q", "jobs", "--search", search, "-o", "json"
        )
        assert [t["id"] for t in json.loads(out)["tasks"]] == expected, search
    code, out, _ = run(
        capsys, "tasks", "list", "-n", NS, "-q", "jobs", "-s", "active", "-o", "yaml"
    )
    assert [t["id"] for t in yaml.safe_load(out)["tasks"]] == ["t-run"]


def test_tasks_show_prints_error_traceback_and_attempts(team: Team, capsys: Any) -> None:
    fill(team)
    code, out, _ = run(capsys, "tasks", "show", "t-dead", "-n", NS, "-q", "jobs")
    assert code == 0
    assert "state:       failed" in out
    assert "error:       ValueError: bad size" in out
    assert "Traceback (most...)" in out
    assert "#1 failed ValueError on pod-1" in out
    code, out, _ = run(capsys, "tasks", "show", "t-dead", "-n", NS, "-q", "jobs", "-o", "json")
    detail = json.loads(out)
    assert (detail["args"], detail["error"]["type"]) == ([3], "ValueError")
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in detail["history"]] == [
        (1, "pod-1", "failed")
    ]


def test_not_found_and_usage_errors_have_their_own_exit_codes(team: Team, capsys: Any) -> None:
    fill(team)
    code, out, err = run(capsys, "tasks", "show", "nope", "-n", NS, "-q", "jobs")
    assert (code, out, err) == (3, "", f"kubetasks: task nope not found on queue {NS}/jobs\n")
    code, _, err = run(capsys, "tasks", "list", "-n", NS, "-q", "nosuch")
    assert (code, err) == (3, f"kubetasks: unknown queue {NS}/nosuch\n")
    code, _, err = run(capsys, "dead", "list", "-n", NS, "-q", "Bad_Name")
    assert code == 2 and "Bad_Name" in err and "Traceback" not in err
    code, _, err = run(capsys, "dead", "rerun", "-n", NS, "-q", "jobs")
    assert (code, err) == (2, "kubetasks: give a dead task's ID or --all (not both)\n")
    with pytest.raises(SystemExit) as exit_:
        main(["tasks", "list", "--state", "done"])
    assert exit_.value.code == 2
    assert "invalid choice: 'done'" in capsys.readouterr().err


def test_redis_unreachable_exits_4_without_a_traceback(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETASKS_REDIS_URL", "redis://127.0.0.1:1/0")
    for argv in (["queues"], ["tasks", "list"], ["dead", "purge"], ["cancel", "x"]):
        code, _, err = run(capsys, *argv)
        assert code == 4, argv
        assert err.startswith("kubetasks: Redis is unreachable: "), err
        assert "Traceback" not in err


def test_dead_list_rerun_delete_and_purge(team: Team, capsys: Any) -> None:
    fill(team)
    more = [TaskMessage(id=f"d{i}", handler="h", queue="jobs", max_retries=0) for i in range(3)]
    team.enqueue(more)
    for leased in team.dequeue("jobs", "pod-2", 10, 60):
        if leased.message.id.startswith("d") or leased.message.id == "t-a":
            team.fail("jobs", "pod-2", leased.message.id, 1, "failed", '{"type":"E"}')

    code, out, _ = run(capsys, "dead", "list", "-n", NS, "-q", "jobs", "-o", "json")
    assert sorted(t["id"] for t in json.loads(out)["tasks"]) == ["d0", "d1", "d2", "t-a", "t-dead"]

    code, out, _ = run(capsys, "dead", "rerun", "t-dead", "-n", NS, "-q", "jobs", "-o", "json")
    ((pair),) = json.loads(out)["rerun"]
    assert code == 0 and pair["id"] == "t-dead"
    code, out, _ = run(capsys, "tasks", "show", pair["newId"], "-n", NS, "-q", "jobs", "-o", "json")
    assert (json.loads(out)["state"], json.loads(out)["rerunOf"]) == ("pending", "t-dead")
    code, _, err = run(capsys, "dead", "rerun", "t-dead", "-n", NS, "-q", "jobs")
    assert code == 3 and "not a dead task" in err

    code, out, _ = run(capsys, "dead", "delete", "d0", "-n", NS, "-q", "jobs")
    assert (code, out) == (0, "deleted d0\n")
    code, _, _ = run(capsys, "dead", "delete", "d0", "-n", NS, "-q", "jobs")
    assert code == 3

    with redis.Redis.from_url(team.url) as r:  # a dead id whose record expired
        r.zadd(f"kubetasks:{{{NS}/jobs}}:dead", {"expired": 0})
    code, out, _ = run(capsys, "dead", "rerun", "--all", "-n", NS, "-q", "jobs")
    assert code == 0
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["d1", "d2", "t-a"]
    team.enqueue(
        [TaskMessage(id=f"late{i}", handler="h", queue="late", max_retries=0) for i in range(2)]
    )
    for leased in team.dequeue("late", "pod-2", 2, 60):
        team.fail("late", "pod-2", leased.message.id, 1, "failed", '{"type":"E"}')
    code, out, _ = run(capsys, "dead", "purge", "-n", NS, "-q", "late", "-o", "json")
    assert (code, json.loads(out)) == (0, {"deleted": 2})
    assert (team.stats("late")).dead == 0
    assert team.get_task("late", "late0") is None
    code, out, _ = run(capsys, "dead", "purge", "-n", NS, "-q", "late")
    assert (code, out) == (0, "deleted 0 dead tasks\n")


def test_cancel_exit_codes(team: Team, capsys: Any) -> None:
    fill(team)
    code, out, _ = run(capsys, "cancel", "t-a", "-n", NS, "-q", "jobs")
    assert (code, out) == (0, "cancelled\n")
    code, out, _ = run(capsys, "cancel", "t-run", "-n", NS, "-q", "jobs", "-o", "json")
    assert (code, json.loads(out)["outcome"]) == (0, "cancelling")
    code, out, err = run(capsys, "cancel", "t-dead", "-n", NS, "-q", "jobs")
    assert (code, out) == (1, "failed\n")
    assert "had ended already (failed)" in err
    code, _, err = run(capsys, "cancel", "nope", "-n", NS, "-q", "jobs")
    assert code == 3 and "task nope not found" in err


def test_the_namespace_comes_from_the_kubeconfig_context(
    team: Team, capsys: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(team)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": NS}}
                ],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    code, out, _ = run(capsys, "tasks", "list", "-q", "jobs", "-o", "json")
    assert (code, json.loads(out)["namespace"]) == (0, NS)
    monkeypatch.setenv("KUBETASKS_NAMESPACE", "default")  # the variable wins over kubeconfig
    code, _, err = run(capsys, "tasks", "list", "-q", "jobs")
    assert (code, err) == (3, "kubetasks: unknown queue default/jobs\n")


def test_python_dash_m_kubetasks_and_bash_completion(tmp_path: Any) -> None:
    for module in ("kubetasks", "kubetasks.cli"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True
        )
        assert (proc.returncode, proc.stdout.split()[0]) == (0, "kubetasks"), module

    script = subprocess.run(
        [sys.executable, "-m", "kubetasks", "completion", "bash"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "complete -o default -F _kubetasks_complete kubetasks" in script
    bash = shutil.which("bash")
    assert bash is not None
    shim = tmp_path / "kubetasks"  # what the installed console script does
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m kubetasks "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        program = (
            script
            + f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            + "_kubetasks_complete; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
        )
        out = subprocess.run(
            [bash, "-c", program], capture_output=True, text=True, env=env, check=True
        ).stdout
        return [w for w in out.splitlines() if w]

    assert complete("kubetasks ta") == ["tasks", "taskset"]
    assert complete("kubetasks taskset ") == ["results"]
    assert complete("kubetasks tasks ") == ["list", "rerun", "show"]
    assert complete("kubetasks dead ") == ["delete", "list", "purge", "rerun"]
    assert complete("kubetasks tasks list --state ret") == ["retrying"]
    assert complete("kubetasks tasks list -o ") == ["table", "json", "yaml"]
    assert "--search" in complete("kubetasks dead list --")
    zsh = subprocess.run(
        [sys.executable, "-m", "kubetasks", "completion", "zsh"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "compdef _kubetasks kubetasks" in zsh


def test_an_unreachable_kubernetes_api_exits_4(
    capsys: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for argv in (["tasks", "rerun", "t"], ["pause", "q"], ["resume", "q"]):
        code, _, err = run(capsys, *argv)
        assert code == 4, argv
        assert err.startswith("kubetasks: the Kubernetes API is unreachable: "), err


def test_a_rerun_manifest_copies_spec_and_labels_but_not_the_schedule() -> None:
    from kubetasks.k8s.tasks import rerun_manifest
    from kubetasks.vocabulary import PARENT_LABEL, RERUN_OF_LABEL

    old = {
        "metadata": {
            "name": "nightly-29000000",
            "namespace": "ns",
            "uid": "u",
            "labels": {"app": "x", PARENT_LABEL: "nightly"},
            "finalizers": ["kubetasks.dev/cleanup"],
        },
        "spec": {"handler": "h", "args": [1]},
        "status": {"phase": "Failed"},
    }
    assert rerun_manifest(old) == {
        "apiVersion": "kubetasks.dev/v1alpha1",
        "kind": "Task",
        "metadata": {
            "generateName": "nightly-29000000-rerun-",
            "namespace": "ns",
            "labels": {"app": "x", RERUN_OF_LABEL: "nightly-29000000"},
        },
        "spec": {"handler": "h", "args": [1]},
    }


def test_enqueue_and_status(team: Team, capsys: Any) -> None:
    code, out, _ = run(
        capsys,
        "enqueue",
        "jobs.x",
        "1",
        "--id",
        "e1",
        "-n",
        NS,
        "--queue",
        "jobs",
        "--unique-for",
        "60",
    )
    assert (code, out) == (0, "e1\tjobs\tqueued\n")
    code, _, err = run(
        capsys,
        "enqueue",
        "jobs.x",
        "1",
        "--id",
        "e2",
        "-n",
        NS,
        "--queue",
        "jobs",
        "--unique-for",
        "60",
    )
    assert (code, err) == (1, "duplicate: task e1 holds the same unique key\n")
    code, out, _ = run(capsys, "status", "e1", "-n", NS, "--queue", "jobs")
    assert (code, json.loads(out)["state"]) == (0, "pending")
    code, _, err = run(capsys, "status", "e9", "-n", NS, "--queue", "jobs")
    assert (code, err) == (3, f"kubetasks: task e9 not found on queue {NS}/jobs\n")
