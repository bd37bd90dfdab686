"""The pod network of the real node, from inside real pods.

* **Nothing leaves the machine.** An "outside" host is simulated on this machine: a network
  namespace behind a veth pair with an address from the benchmarking range 198.18.0.0/15,
  routed from the host. A host process reaches it; a pod does not, neither directly nor
  through a Service whose endpoint points there (kube-proxy's DNAT happens first, and the
  firewall still sees a destination outside the pod network), and a packet counter in the
  outside namespace proves that not one packet from the pod subnet arrived. No test sends
  anything to a real outside address. A pod on the host's network, which would send as the
  host itself, is refused at admission (Pod Security ``baseline``).
* **Inside the cluster everything works**: a pod reaches the API server as
  ``kubernetes.default.svc`` over HTTPS with its own service-account token, resolves Service
  names through the cluster DNS (and nothing outside the cluster), reaches another pod
  through a Service, and ``kubectl logs`` and ``kubectl exec`` work through the kubelet.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devenv.network import POD_SUBNET
from devenv.node import PROBE_IMAGE
from fixtures.realnode import RealNodeHandle

OUTSIDE_IP, OUTSIDE_HOST_IP, OUTSIDE_PORT = "198.18.0.1", "198.18.0.2", 8080

_LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, peer = server.accept()
    with open(sys.argv[3], "a") as log:
        log.write(peer[0] + "\\n")
    conn.close()
"""


@dataclass
class Outside:
    """A host "outside" this node: its own network namespace, reachable from the host."""

    netns: str
    connections: Path

    def peers(self) -> list[str]:
        return self.connections.read_text().split() if self.connections.exists() else []

    def packets_from_pods(self) -> int:
        listing = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-j", "list", "table", "ip", "watch"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        return sum(
            item["rule"]["expr"][-1]["counter"]["packets"]
            for item in json.loads(listing)["nftables"]
            if "rule" in item
        )


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, timeout=20
    ).stdout


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    suffix = uuid.uuid4().hex[:6]
    netns, host_end, ns_end = f"kt-outside-{suffix}", f"kto{suffix}h", f"kto{suffix}n"
    log = tmp_path_factory.mktemp("outside") / "connections"
    _ip("netns", "add", netns)
    listener = None
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", netns)
        _ip("addr", "add", f"{OUTSIDE_HOST_IP}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", netns, "addr", "add", f"{OUTSIDE_IP}/30", "dev", ns_end)
        _ip("-n", netns, "link", "set", ns_end, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", OUTSIDE_HOST_IP)
        # Count every packet from the pod subnet that reaches the outside host at all.
        rules = (
            "table ip watch {\n chain in {\n"
            "  type filter hook prerouting priority -300;\n"
            f"  ip saddr {POD_SUBNET} counter\n }}\n}}\n"
        )
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True,
                       check=True, timeout=10)  # fmt: skip
        listener = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _LISTENER, OUTSIDE_IP,
             str(OUTSIDE_PORT), str(log)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        yield Outside(netns, log)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
            if listener.stdout is not None:
                listener.stdout.close()
        subprocess.run(["ip", "link", "delete", host_end], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=10)


@dataclass
class Pods:
    node: RealNodeHandle
    namespace: str

    def exec(self, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.node.kubectl("-n", self.namespace, "exec", pod, "--", "/probe", *command)

    def cluster_ip(self, service: str) -> str:
        result = self.node.kubectl(
            "-n", self.namespace, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}"
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _pod(name: str, args: list[str], labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe", "image": PROBE_IMAGE, "imagePullPolicy": "Never",
                "command": ["/probe", *args],
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def pods(real_node: RealNodeHandle) -> Iterator[Pods]:
    namespace = f"podnet-{uuid.uuid4().hex[:6]}"
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        _pod("client", ["sleep"]),
        _pod("server", ["serve", ":8080"], {"app": "echo"}),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
         "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080}]}},
        # A Service without a selector whose endpoint is the "outside" host.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
         "spec": {"ports": [{"port": OUTSIDE_PORT}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "outside-1", "labels": {"kubernetes.io/service-name": "outside"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [OUTSIDE_IP]}],
         "ports": [{"port": OUTSIDE_PORT, "protocol": "TCP"}]},
    ]  # fmt: skip
    real_node.kubectl("create", "namespace", namespace)
    for manifest in manifests[1:]:
        applied = real_node.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
        assert applied.returncode == 0, applied.stderr
    ready = real_node.kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "pod/client", "pod/server",
        "--timeout=90s",
    )  # fmt: skip
    assert ready.returncode == 0, (
        ready.stderr + real_node.kubectl("-n", namespace, "describe", "pods").stdout
    )
    yield Pods(real_node, namespace)
    real_node.kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_host_process_reaches_the_outside_host(outside: Outside) -> None:
    with socket.create_connection((OUTSIDE_IP, OUTSIDE_PORT), timeout=5):
        pass
    deadline = time.monotonic() + 5
    while OUTSIDE_HOST_IP not in outside.peers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert OUTSIDE_HOST_IP in outside.peers()


def test_a_pod_cannot_reach_the_outside_host(outside: Outside, pods: Pods) -> None:
    direct = pods.exec("client", "connect", f"{OUTSIDE_IP}:{OUTSIDE_PORT}")
    assert direct.returncode != 0
    assert "connection refused" in direct.stderr, direct.stderr  # our reject, not a timeout
    # Through the Service the reset carries the endpoint's address, which the pod never
    # dialled, so its connect times out instead of being refused: either way, nothing got out.
    service_ip = pods.cluster_ip("outside")
    # Only once kube-proxy has its DNAT rule does this test the translated path.
    deadline = time.monotonic() + 30
    while f"-d {service_ip}/32" not in _nat_rules():
        assert time.monotonic() < deadline, f"kube-proxy never programmed {service_ip}"
        time.sleep(0.2)
    via_service = pods.exec("client", "connect", f"{service_ip}:{OUTSIDE_PORT}")
    assert via_service.returncode != 0
    assert "connected" not in via_service.stdout, via_service.stdout
    assert outside.packets_from_pods() == 0
    assert all(peer == OUTSIDE_HOST_IP for peer in outside.peers())


def test_a_pod_reaches_the_api_server_with_its_own_token(pods: Pods) -> None:
    whoami = pods.exec("client", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{pods.namespace}:default"
    version = pods.exec("client", "get", "https://kubernetes.default.svc/version")
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["gitVersion"] == "v1.34.4"


def test_cluster_dns_answers_cluster_names_only(pods: Pods) -> None:
    echo = pods.exec("client", "resolve", "echo")  # through the pod's search path
    assert echo.returncode == 0, echo.stderr
    assert echo.stdout.split() == [pods.cluster_ip("echo")]
    api = pods.exec("client", "resolve", "kubernetes.default.svc.cluster.local")
    assert api.stdout.split() == ["10.0.0.1"], api.stderr
    outside_name = pods.exec("client", "resolve", "example.com.")
    assert outside_name.returncode != 0


def test_a_pod_reaches_another_through_a_service_and_kubectl_shows_it(pods: Pods) -> None:
    answer = pods.exec("client", "get", "http://echo:8080/hello")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "server"
    logs = pods.node.kubectl("-n", pods.namespace, "logs", "server")
    assert logs.returncode == 0, logs.stderr
    assert "GET /hello" in logs.stdout


def test_a_pod_on_the_host_network_is_refused(pods: Pods) -> None:
    """The firewall guards the pod network; a hostNetwork pod would send as the host itself,
    so Pod Security ``baseline`` (enforced by default on the real node) refuses it."""
    manifest = _pod("on-host", ["sleep"])
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    spec["hostNetwork"] = True
    created = pods.node.kubectl(
        "-n", pods.namespace, "apply", "-f", "-", input=json.dumps(manifest)
    )
    assert created.returncode != 0
    assert "violates PodSecurity" in created.stderr and "hostNetwork" in created.stderr
