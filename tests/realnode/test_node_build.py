"""``tests/node/build.sh`` and :mod:`devenv.node` name the same images and binaries: the
script loads the pause image under the name containerd is told to use as its sandbox image,
and the probe under the name the tests' pods ask for."""

from __future__ import annotations

import re
from pathlib import Path

from devenv.node import NODE_BINARIES, PAUSE_IMAGE, PROBE_IMAGE

BUILD = Path(__file__).resolve().parents[1] / "node" / "build.sh"


def test_build_script_and_node_agree_on_names() -> None:
    script = BUILD.read_text()
    assert re.search(rf'^pause_image="{re.escape(PAUSE_IMAGE)}"$', script, re.M)
    assert re.search(rf'^probe_image="{re.escape(PROBE_IMAGE)}"$', script, re.M)
    for name in NODE_BINARIES:
        assert re.search(rf"^build {name} ", script, re.M), name
