"""`make demo` end to end: the demo applies examples/ and waits for every outcome it promises.

The demo runs as a user runs it (``python -m devenv.demo``), in its own state directory:
its own control plane, Redis, process kubelet and operator. It exits 0 only when hello, the
retried Task, the chain, two PeriodicTask runs and the 40-Task burst all succeeded and the
pool went up from zero and back down; this test also checks the screen it leaves and that
nothing is left running. The examples cannot rot without this failing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devenv.env import DevEnvironment


@pytest.mark.controlplane
@pytest.mark.timeout(420)
def test_make_demo_runs_the_examples_to_completion(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "devenv.demo",
            "--state-dir",
            str(state),
            "--timeout",
            "300",
            "--kubelet",
            "process",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = done.stdout
    assert done.returncode == 0, out[-6000:] + done.stderr[-3000:]
    assert "demo (process kubelet): complete" in out
    assert "kubelet: the process kubelet (worker pods as local processes), because asked for" in out
    assert "hello: Succeeded after 1 attempt(s)" in out
    assert "flaky: Succeeded after 3 attempt(s)" in out
    assert 'greet: Succeeded after 1 attempt(s), result {"args": ["Ada", "says hello"]' in out
    assert "scaled 0 -> " in out and "-> 0 replicas" in out
    status = DevEnvironment(state).status()
    assert not any(status.components.values()), f"left running: {status.components}"
