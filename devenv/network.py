"""The real node's network: one bridge, a static pod subnet, and a firewall that keeps every
packet of the pod network on this machine.

Pods get addresses from ``POD_SUBNET`` on the bridge ``BRIDGE`` (CNI ``bridge`` +
``host-local``, see :mod:`devenv.node`). The same bridge carries ``NODE_IP``, the node's own
address: the API server, the kubelet and CoreDNS listen there (and not on the machine's
outward interface), the API server advertises it so the default endpoint reconciler makes
``kubernetes.default`` reach it through kube-proxy, and pods send DNS queries to it. The bridge
doubles as the dummy interface this machine's kernel does not have.

**No packet from the pod network may leave this machine.** Without a rule, a pod's packet to
any address that is not on the bridge (a Service IP kube-proxy does not know, a public
address) is forwarded out of the default route. The rules live in a table of their own
(``inet kubetasks``, IPv4 and IPv6 in one place) whose chains hook into forward, input and
output just before iptables' filter chains. That placement is the point: kube-proxy prepends
its own jumps to iptables' FORWARD chain, among them an ACCEPT of every connection it marked
for masquerading, so a chain of ours inside iptables' FORWARD could end up behind them and be
skipped. A drop or reject in an earlier base chain is final whatever later chains say. The
rules reject

* anything forwarded from the bridge that is not for the pod subnet (after kube-proxy's DNAT,
  so a Service whose endpoints are pods passes, and one that points elsewhere does not);
* anything forwarded with a pod source address, whatever interface it came in on;
* pod traffic to the node itself except to ``NODE_IP`` (API server, DNS) and replies to the
  node's own connections (kubelet probes);
* the node's own packets with a pod-subnet source that leave by any interface but loopback.

Only one real node can run on a machine: the bridge, the subnet, the rules and kube-proxy's
iptables chains are host-wide. ``LOCK_FILE`` records whose it is, so a second ``up`` says which
state directory to stop, and teardown touches nothing of a node that is not its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from kubetasks.errors import ConfigurationError

POD_SUBNET = "10.244.0.0/24"
"""Pod addresses (host-local IPAM); clear of the service range 10.0.0.0/24 and of eth0."""
POD_GATEWAY = "10.244.0.1"
NODE_IP = "10.245.0.1"
"""The node's own address, on the bridge: API server, kubelet and DNS listen here."""
BRIDGE = "kubetasks0"
CNI_NETWORK = "kubetasks"
NFT_TABLE = "kubetasks"
LOCK_FILE = Path("/run/kubetasks/realnode.json")
_NETNS_DIR = Path("/var/run/netns")
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class NetworkError(ConfigurationError):
    """The node network could not be set up (or belongs to another environment)."""


def firewall_rules() -> str:
    """The nftables table, as ``nft -f`` reads it."""

    def reject(match: str) -> str:
        # TCP gets a reset (a fast, clear "connection refused"), everything else an ICMP error.
        return (
            f"\t\t{match} meta l4proto tcp counter reject with tcp reset\n"
            f"\t\t{match} counter reject with icmpx type admin-prohibited\n"
        )

    return (
        f"table inet {NFT_TABLE} {{\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter - 10; policy accept;\n"
        f'\t\tiifname "{BRIDGE}" ip daddr {POD_SUBNET} accept\n'
        + reject(f'iifname "{BRIDGE}"')
        + reject(f"ip saddr {POD_SUBNET}")
        + "\t}\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter - 10; policy accept;\n"
        f'\t\tiifname "{BRIDGE}" ct state established,related accept\n'
        f'\t\tiifname "{BRIDGE}" ip daddr {NODE_IP} accept\n'
        + reject(f'iifname "{BRIDGE}"')
        + "\t}\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority filter - 10; policy accept;\n"
        '\t\toifname "lo" accept\n'
        + reject(f"ip saddr {POD_SUBNET} ip daddr != {POD_SUBNET}")
        + "\t}\n"
        "}\n"
    )


def owner() -> Path | None:
    """The state directory of the real node that holds this machine's network, if any."""
    try:
        return Path(json.loads(LOCK_FILE.read_text())["state_dir"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def setup(state_dir: Path) -> None:
    """Bridge with the gateway and node addresses, IPv4 forwarding, the firewall; idempotent
    for the same ``state_dir``, refused while another environment's node holds the network."""
    holder = owner()
    if holder is not None and holder != state_dir:
        if holder.exists():
            raise NetworkError(
                f"another real node runs on this machine (state directory {holder}); only one"
                f" can (the bridge {BRIDGE}, the subnet {POD_SUBNET} and the iptables rules"
                f" are host-wide). Stop it first: kubetasks dev down --state-dir {holder}"
            )
        teardown(holder)  # its directory is gone: a leftover of a crashed run
    if holder is None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        LOCK_FILE.write_text(
            json.dumps({"state_dir": str(state_dir), "ip_forward": _IP_FORWARD.read_text().strip()})
        )
    # The firewall goes in before forwarding is switched on, and before any pod exists.
    _run("nft", "-f", "-", input=f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
    _run("nft", "-f", "-", input=firewall_rules())
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = ipaddress.ip_network(POD_SUBNET).prefixlen
    for address in (f"{POD_GATEWAY}/{prefix}", f"{NODE_IP}/32"):
        _run("ip", "addr", "replace", address, "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _IP_FORWARD.write_text("1\n")


def teardown(state_dir: Path) -> None:
    """Remove everything :func:`setup` and the pods added to the host network: the pods'
    network namespaces, the bridge (and with it the pods' veth ends), kube-proxy's and the
    kubelet's iptables chains, our nftables table; restore IPv4 forwarding. Nothing is
    touched unless this machine's network is ``state_dir``'s."""
    holder = owner()
    if holder != state_dir:
        return
    try:
        saved = json.loads(LOCK_FILE.read_text())
    except (FileNotFoundError, ValueError):
        saved = {}
    for netns in pod_network_namespaces():
        _run("ip", "netns", "delete", netns.name, check=False)
    with contextlib.suppress(OSError):
        _NETNS_DIR.rmdir()  # containerd made it for the pods; only when empty
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "delete", BRIDGE, check=False)
    remove_kube_iptables_chains()
    if shutil.which("conntrack"):
        _run("conntrack", "-D", "-s", POD_SUBNET, check=False, quiet=True)
    _run("nft", "-f", "-", input=f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
    _IP_FORWARD.write_text(f"{saved.get('ip_forward', '0')}\n")
    for results in Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*"):
        results.unlink(missing_ok=True)
    LOCK_FILE.unlink(missing_ok=True)


def pod_network_namespaces() -> list[Path]:
    """The network namespaces containerd made for our pods: ``cni-*`` ones with an address
    in the pod subnet (containerd 1.6 keeps them in /var/run/netns, shared with the host)."""
    found = []
    subnet = ipaddress.ip_network(POD_SUBNET)
    for path in sorted(_NETNS_DIR.glob("cni-*")) if _NETNS_DIR.is_dir() else []:
        result = _run("ip", "-n", path.name, "-j", "-4", "addr", check=False, quiet=True)
        try:
            links = json.loads(result.stdout or "[]")
        except ValueError:
            continue
        addresses = [a["local"] for link in links for a in link.get("addr_info", [])]
        if any(ipaddress.ip_address(a) in subnet for a in addresses):
            found.append(path)
    return found


def remove_kube_iptables_chains() -> None:
    """Delete every ``KUBE-*`` chain and the rules that jump to them, in every table of
    iptables and ip6tables: kube-proxy's Service rules and the kubelet's canary chains."""
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("filter", "nat", "mangle", "raw"):
            listing = _run(tool, "-w", "-t", table, "-S", check=False, quiet=True).stdout
            chains = [
                line.split()[1] for line in listing.splitlines() if line.startswith("-N KUBE-")
            ]
            for line in listing.splitlines():
                parts = shlex.split(line)  # comments are quoted and contain spaces
                if parts[:1] == ["-A"] and parts[1] not in chains and "-j" in parts:
                    target = parts[parts.index("-j") + 1]
                    if target.startswith("KUBE-"):
                        _run(tool, "-w", "-t", table, "-D", *parts[1:], check=False, quiet=True)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-F", chain, check=False, quiet=True)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-X", chain, check=False, quiet=True)


def leftovers() -> list[str]:
    """What of a real node's network is still on this machine (empty after teardown)."""
    found = []
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    if _run("nft", "list", "table", "inet", NFT_TABLE, check=False, quiet=True).returncode == 0:
        found.append(f"nftables table inet {NFT_TABLE}")
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("filter", "nat", "mangle", "raw"):
            listing = _run(tool, "-w", "-t", table, "-S", check=False, quiet=True).stdout
            found += [
                f"{tool} -t {table} {line}" for line in listing.splitlines() if "KUBE-" in line
            ]
    found += [f"network namespace {p}" for p in pod_network_namespaces()]
    if LOCK_FILE.exists():
        found.append(f"lock {LOCK_FILE}")
    return found


def _run(
    *argv: str, input: str | None = None, check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=60,
        env=os.environ | {"LC_ALL": "C"},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result
