"""Settings shared by the components, parsed and validated in one place (pure)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubetasks.errors import ConfigurationError
from kubetasks.queuename import (
    DEFAULT_NAMESPACE,
    qualified,
    validate_namespace,
    validate_queue_name,
)

REDIS_URL_ENV = "KUBETASKS_REDIS_URL"
NAMESPACE_ENV = "KUBETASKS_NAMESPACE"
#: Set in every worker pod from the downward API (metadata.namespace) by the operator.
POD_NAMESPACE_ENV = "POD_NAMESPACE"
POD_NAME_ENV = "POD_NAME"
REDIS_PASSWORD_ENV = "KUBETASKS_REDIS_PASSWORD"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(explicit: str | None = None) -> str:
    """The Redis URL: the explicit one, else ``$KUBETASKS_REDIS_URL``, else localhost.

    A password in ``$KUBETASKS_REDIS_PASSWORD`` (mounted from a Secret) is added to a URL
    that has none, so the URL itself can live in a ConfigMap.
    """
    url = explicit or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"{REDIS_URL_ENV} must start with redis://, rediss:// or unix://, got {url!r}"
        )
    password = os.environ.get(REDIS_PASSWORD_ENV)
    if password and "@" not in url.split("//", 1)[1].split("/", 1)[0]:
        from urllib.parse import quote

        scheme, rest = url.split("//", 1)
        url = f"{scheme}//:{quote(password, safe='')}@{rest}"
    return url


@dataclass(frozen=True, slots=True)
class QueueWeight:
    name: str
    weight: int = 1


def parse_queues(text: str) -> tuple[QueueWeight, ...]:
    """``"high:3,default:1"`` -> queues with weights (weight 1 when omitted)."""
    queues: list[QueueWeight] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise ConfigurationError(f"queue weight in {part!r} must be an integer") from None
        if w < 1:
            raise ConfigurationError(f"queue weight in {part!r} must be >= 1")
        validate_queue_name(name, "--queues")
        if any(q.name == name for q in queues):
            raise ConfigurationError(f"queue {name!r} is listed twice")
        queues.append(QueueWeight(name, w))
    if not queues:
        raise ConfigurationError("at least one queue is needed, e.g. --queues default")
    return tuple(queues)


def namespace(explicit: str | None = None) -> str:
    """The namespace whose queues a client or the CLI addresses: the explicit one, else
    ``$KUBETASKS_NAMESPACE``, else the pod's own (``$POD_NAMESPACE``), else ``default``."""
    chosen = (
        explicit
        or os.environ.get(NAMESPACE_ENV)
        or os.environ.get(POD_NAMESPACE_ENV)
        or DEFAULT_NAMESPACE
    )
    return validate_namespace(chosen, "--namespace" if explicit else NAMESPACE_ENV)


def worker_namespace(explicit: str | None = None) -> str:
    """The namespace whose queues a worker serves. In a pod it is the pod's namespace and
    nothing else: a worker never takes the tasks of another namespace, which would run them
    with this pod's image, service account, secrets and network position. Outside a pod it
    is chosen as for a client."""
    pod = os.environ.get(POD_NAMESPACE_ENV)
    if pod:
        if explicit and explicit != pod:
            raise ConfigurationError(
                f"--namespace {explicit!r}: a worker in a pod serves the queues of its own"
                f" namespace ({pod!r}) only"
            )
        return validate_namespace(pod, POD_NAMESPACE_ENV)
    return namespace(explicit)


def worker_id_for_pod(namespace: str, pod: str) -> str:
    """The worker identity of the worker container of pod ``pod`` in ``namespace``: the one
    rule that the worker (naming itself) and the operator (taking back what a deleted pod
    held) share. Unique across the cluster: pods of two namespaces may share a name.

    The identity is stable across restarts of the container in the same pod, and that is
    what lets a restarted worker take back at once what its previous incarnation held.
    """
    return qualified(namespace, pod)


def default_worker_id() -> str:
    """The pod's worker identity in Kubernetes (stable per pod), else host, pid and a random
    suffix (unique per process, so a process outside a pod never takes back another's tasks).
    """
    pod = os.environ.get(POD_NAME_ENV)
    if pod:
        return worker_id_for_pod(worker_namespace(), pod)
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def operator_identity() -> str:
    """The operator's name among its kopf peers: the pod name (``$POD_NAME``, from the
    downward API) in Kubernetes, else host and pid.

    kopf is given it explicitly because its own default starts with the user name
    (``getpass.getuser()``), which raises for a UID without a passwd entry: the images run
    as UID 65532 and have none.
    """
    return os.environ.get(POD_NAME_ENV) or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    queues: tuple[QueueWeight, ...]
    concurrency: int = 10
    """Tasks run at once by one worker process."""
    strict_priority: bool = False
    """Serve queues strictly in weight order instead of weighted random order."""
    lease_seconds: float = 30.0
    """How long a leased task stays with a silent worker before others take it back."""
    heartbeat_interval: float | None = None
    """Seconds between lease extensions; default a third of the lease."""
    grace_period: float = 25.0
    """Seconds running tasks get to finish after SIGTERM before they are handed back."""
    idle_wait: float = 1.0
    """Longest an idle worker blocks before it looks at delayed tasks and expired leases."""
    promote_interval: float = 1.0
    reclaim_interval: float = 5.0
    max_batch: int = 100
    """Most tasks leased in one round trip."""
    worker_id: str = field(default_factory=default_worker_id)
    """Who holds the leases. One live process per identity: a worker starting under an
    identity takes back every task still leased to it (its previous incarnation crashed)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.lease_seconds <= 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {self.lease_seconds}")
        if self.grace_period < 0:
            raise ConfigurationError(f"grace period must be >= 0, got {self.grace_period}")

    @property
    def beat_every(self) -> float:
        return self.heartbeat_interval or self.lease_seconds / 3


#: Seconds a ``kubetasks.http`` request gets when the task names none, and at most.
DEFAULT_HTTP_TIMEOUT = 10.0
MAX_HTTP_TIMEOUT = 60.0

#: A network of either family, as ``ipaddress.ip_network`` returns.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What ``kubetasks.http`` (and any later network built-in) may reach, and how much of it.

    Built only with ``kubetasks worker --allow-http``; the destination rule itself lives in
    ``kubetasks.worker.netpolicy``.
    """

    allow_hosts: frozenset[str] = frozenset()
    """Host names (lower case, no trailing dot) reached whatever they resolve to
    (``--http-allow NAME``). Default none."""
    allow_networks: tuple[IPNetwork, ...] = ()
    """Addresses reached even inside a refused range (``--http-allow CIDR``). Default none."""
    deny_networks: tuple[IPNetwork, ...] = ()
    """Refused on top of loopback, link-local, private and the other non-public ranges, such
    as a cluster's Service or pod range outside them (``--http-deny-cidrs``). Default none."""
    default_timeout: float = DEFAULT_HTTP_TIMEOUT
    """Seconds a request (every redirect hop included) may take when the task names none."""
    max_timeout: float = MAX_HTTP_TIMEOUT
    """Most seconds a request may take whatever the task asks (``--http-max-timeout``)."""
    max_body: int = 16 * 1024
    """Bytes of the answer kept in the result; reading stops (and the connection is closed)
    one byte after them, so a huge answer costs no memory."""
    max_redirects: int = 5
    """Redirects followed when the task asks ``follow_redirects``; each hop is checked."""

    def __post_init__(self) -> None:
        if not 0 < self.default_timeout <= self.max_timeout:
            raise ConfigurationError(
                f"http timeouts need 0 < default ({self.default_timeout}) <= max"
                f" ({self.max_timeout})"
            )

    def bounded_timeout(self, asked: float | None) -> float:
        """The seconds a request gets: what it asked (default ``default_timeout``), at most
        ``max_timeout``."""
        if asked is None:
            return self.default_timeout
        return min(max(float(asked), 0.001), self.max_timeout)


#: A DNS name as ``--http-allow`` takes it (lower case, labels of letters, digits and dashes).
_HOST_NAME = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


def parse_http_allow(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """``--http-allow`` values (repeatable, comma-separated): each a CIDR or address, else a
    host name. Returns (names, networks)."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in _split(entries):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            name = entry.lower().rstrip(".")
            if not _HOST_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"--http-allow {entry!r} is neither a CIDR nor a host name"
                ) from None
            names.add(name)
    return frozenset(names), tuple(networks)


def parse_cidrs(entries: Iterable[str], flag: str) -> tuple[IPNetwork, ...]:
    """CIDRs from a repeatable, comma-separated flag; a bad one names the flag."""
    try:
        return tuple(ipaddress.ip_network(e, strict=False) for e in _split(entries))
    except ValueError as exc:
        raise ConfigurationError(f"{flag}: {exc}") from None


def _split(entries: Iterable[str]) -> list[str]:
    return [part.strip() for entry in entries for part in entry.split(",") if part.strip()]
