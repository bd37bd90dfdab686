"""The ``kubetasks dev`` commands: ``up``, ``down``, ``status`` and ``kubelet``.

``register`` plugs them into the main CLI; ``python -m devenv.commands`` runs them on
their own, which the harness tests use so they do not depend on the rest of the CLI.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.env import KUBELETS, DevEnvironment
from devenv.kubelet import DEFAULT_NODE_NAME, ProcessKubelet
from kubetasks.errors import KubetasksError


def cmd_up(ns: argparse.Namespace) -> int:
    env = DevEnvironment(ns.state_dir)
    crds = Path(ns.crds) if ns.crds else None
    kubelet = "none" if ns.no_kubelet else ns.kubelet
    status = env.up(kubelet=kubelet, crds=crds, timeout=ns.timeout)
    word = "reusing the running" if status.reused else "started a"
    print(
        f"# {word} local environment in {status.state_dir} (kubelet: {status.kubelet})",
        file=sys.stderr,
    )
    print(status.exports())
    return 0


def cmd_down(ns: argparse.Namespace) -> int:
    env = DevEnvironment(ns.state_dir)
    env.down()
    print(f"# stopped the local environment in {env.state_dir}", file=sys.stderr)
    return 0


def cmd_status(ns: argparse.Namespace) -> int:
    status = DevEnvironment(ns.state_dir).status()
    for name, pid in status.components.items():
        print(f"{name:<24} {'running, pid ' + str(pid) if pid else 'not running'}")
    print(f"{'kubelet mode':<24} {status.kubelet}")
    if status.containerd_address:
        print(f"{'containerd address':<24} {status.containerd_address}")
    print(f"{'healthy':<24} {'yes' if status.healthy else 'no'}")
    if status.healthy:
        print(status.exports())
    return 0 if status.healthy else 1


def cmd_kubelet(ns: argparse.Namespace) -> int:
    """Run the process kubelet in the foreground until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    env = DevEnvironment(ns.state_dir)
    plane = ControlPlane.attach(env.control_plane_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with plane.api_client() as api:
        kubelet = ProcessKubelet(api, env.kubelet_dir, node_name=ns.node_name)
        kubelet.register_node()
        try:
            kubelet.run(stop)
        except KeyboardInterrupt:
            pass
        finally:
            kubelet.stop()
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``dev`` with its subcommands to the main CLI's subparsers."""
    dev = subparsers.add_parser(
        "dev", help="a local control plane, Redis and a process or real kubelet (no Docker needed)"
    )
    sub = dev.add_subparsers(dest="dev_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=None,  # resolved when a dev command runs: any kubetasks command parses this
        help="where all state lives (default: $KUBETASKS_DEV_DIR or ~/.cache/kubetasks/dev)",
    )
    up = sub.add_parser(
        "up", parents=[common], help="start (or reuse) the environment; prints export lines"
    )
    up.add_argument(
        "--kubelet",
        choices=KUBELETS,
        default="process",
        help="process: pods as local processes (default, fast); real: containerd, kubelet,"
        " kube-proxy, scheduler and DNS (root, `make node`); none: no kubelet",
    )
    up.add_argument("--no-kubelet", action="store_true", help="the same as --kubelet none")
    up.add_argument(
        "--crds", default="crds", help="directory of CRD manifests to apply, if it exists"
    )
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for start-up")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", parents=[common], help="stop everything and remove its data")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", parents=[common], help="what runs; exit 1 if unhealthy")
    status.set_defaults(func=cmd_status)
    kubelet = sub.add_parser(
        "kubelet", parents=[common], help="run the process kubelet in the foreground"
    )
    kubelet.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    kubelet.set_defaults(func=cmd_kubelet)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devenv.commands up|down|status|kubelet``."""
    parser = argparse.ArgumentParser(prog="kubetasks")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["dev", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = ns.func(ns)
    except KubetasksError as exc:
        print(f"kubetasks: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
