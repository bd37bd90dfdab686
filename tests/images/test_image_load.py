"""Loading the archives into containerd names the images as the chart refers to them.

A containerd of the test's own (private root, state and socket; no CRI plugin, so it starts
no networks and no containers) imports the archives with ``load_images``, exactly as the real
node's containerd does; the kubelet resolves ``kubetasks/operator:dev`` to
``docker.io/kubetasks/operator:dev``, so that is the name that must be listed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.images import IMAGES, archive_path, build_images, load_images, loaded_images, main

pytestmark = pytest.mark.images


@pytest.fixture
def archives() -> dict[str, Path]:
    missing = [image.ref for image in IMAGES if not archive_path(image).is_file()]
    if missing:
        pytest.fail(f"no archive of {missing} for the current inputs: run `make images`")
    return build_images(report=False)


@pytest.fixture
def containerd() -> Iterator[Path]:
    binary = shutil.which("containerd")
    assert binary, "containerd not installed (Debian package containerd; `make node` installs it)"
    # A short path: the socket's must fit in sun_path (108 bytes).
    base = Path(tempfile.mkdtemp(prefix="kt-ctrd-"))
    socket = base / "c.sock"
    config = base / "config.toml"
    config.write_text(
        f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""
    )
    log = (base / "containerd.log").open("w")
    process = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket.is_socket():
            assert process.poll() is None, (base / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def test_loaded_images_carry_the_names_the_chart_uses(
    archives: dict[str, Path], containerd: Path
) -> None:
    assert not loaded_images(containerd) & set(archives)
    load_images(containerd, archives, report=False)
    assert set(archives) <= loaded_images(containerd)
    assert {
        "docker.io/kubetasks/operator:dev",
        "docker.io/kubetasks/worker:dev",
        "docker.io/kubetasks/redis:dev",
    } <= loaded_images(containerd)
    # A second load (make images again) is harmless.
    load_images(containerd, archives, report=False)


def test_load_without_a_real_node_says_how_to_start_one(
    archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--load", "--state-dir", str(tmp_path)]) == 1
    assert "kubetasks dev up --kubelet real" in capsys.readouterr().err
    assert main(["--state-dir", str(tmp_path)]) == 0
    assert "nothing loaded" in capsys.readouterr().err
