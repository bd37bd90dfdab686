"""Listing Tasks a page at a time (``limit``/``continue``) on the real API server: the repair
loop never holds every Task's body at once, and still sees every Task exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from devenv.controlplane import ControlPlane
from fixtures.operator import Tasks
from kubetasks.k8s.api import KubeApi, load_configuration
from kubetasks.k8s.tasks import TaskApi


async def test_every_task_comes_once_in_pages_of_the_limit(
    control_plane: ControlPlane, tasks: Tasks, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(Path(control_plane.kubeconfig)))
    for i in range(7):
        tasks.create(f"t{i}", "h")
    api = KubeApi(load_configuration())
    try:
        pages = [page async for page in TaskApi(api).pages([namespace], limit=3)]
        everything = await TaskApi(api).list([namespace])
    finally:
        await api.close()
    assert [len(page) for page in pages] == [3, 3, 1]
    names = sorted(t["metadata"]["name"] for page in pages for t in page)
    assert names == [f"t{i}" for i in range(7)]
    assert sorted(t["metadata"]["name"] for t in everything) == names
