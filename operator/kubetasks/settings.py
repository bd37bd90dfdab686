"""Settings shared by the components, parsed and validated in one place (pure).

Every environment variable kubetasks reads is declared here, once, as an :class:`EnvVar`
with its type, default and description, and read only through it: the chart sets exactly
the variables declared with ``source=CHART`` (``tests/chart/test_chart_env.py`` renders it
and compares), so a value the chart passes can no longer go unread.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from kubetasks.errors import ConfigurationError
from kubetasks.queuename import (
    DEFAULT_NAMESPACE,
    qualified,
    validate_namespace,
    validate_queue_name,
)

T = TypeVar("T")

#: Who sets a variable: the Helm chart (on the operator, or through the operator on the
#: worker Deployments it creates), Kubernetes itself, or whoever runs kubetasks by hand
#: (a client, the local environment, a tuning knob passed through ``operator.extraEnv``).
Source = Literal["chart", "kubernetes", "user"]
CHART: Source = "chart"


@dataclass(frozen=True, slots=True)
class EnvVar(Generic[T]):
    """One environment variable: its name, how its text becomes a value, and the value when
    it is unset or empty."""

    name: str
    parse: Callable[[str], T]
    default: T
    description: str
    source: Source = "user"

    def get(self, environ: Mapping[str, str] | None = None) -> T:
        """The value now (``os.environ`` unless given); a value that does not parse is a
        :class:`ConfigurationError` naming the variable."""
        text = (os.environ if environ is None else environ).get(self.name, "")
        if not text:
            return self.default
        try:
            return self.parse(text)
        except ValueError as exc:
            raise ConfigurationError(f"{self.name}={text!r}: {exc}") from None


#: Every variable kubetasks reads, by name.
ENVIRONMENT: dict[str, EnvVar[Any]] = {}


def _declare(
    name: str, parse: Callable[[str], T], default: T, description: str, source: Source = "user"
) -> EnvVar[T]:
    assert name not in ENVIRONMENT, f"{name} declared twice"
    var = EnvVar(name, parse, default, description, source)
    ENVIRONMENT[name] = var
    return var


def _text(text: str) -> str:
    return text


def _flag(text: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``), any case."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ValueError("expected true or false")


def _count(text: str) -> int:
    """A whole number, 0 or more."""
    value = int(text)
    if value < 0:
        raise ValueError("expected 0 or more")
    return value


def _labels(text: str) -> dict[str, str]:
    """``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}`` (entries without ``=`` are ignored)."""
    pairs = (p.split("=", 1) for p in text.split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs}


def _names(text: str) -> tuple[str, ...]:
    """``"a, b*"`` -> ``("a", "b*")`` (empty entries are dropped)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Where a Redis CA certificate is mounted, in the operator pod (by the chart) and in every
#: worker pod (by the operator): the chart's ``ssl_ca_certs`` in the URL points here.
REDIS_CA_DIR = "/etc/kubetasks/redis-tls"

# -- Redis: every process ------------------------------------------------------------------
REDIS_URL = _declare(
    "KUBETASKS_REDIS_URL", _text, DEFAULT_REDIS_URL,
    "Redis URL (redis://, rediss:// or unix://); a CA file as ?ssl_ca_certs=PATH.", CHART,
)  # fmt: skip
REDIS_PASSWORD = _declare(
    "KUBETASKS_REDIS_PASSWORD", _text, "",
    "Redis password, added to a URL that carries none (mounted from a Secret).", CHART,
)  # fmt: skip
REDIS_USERNAME = _declare(
    "KUBETASKS_REDIS_USERNAME", _text, "",
    "Redis ACL user the password belongs to, added with it (default: the default user).",
    CHART,
)  # fmt: skip
CLIENT_SPIN_MICROSECONDS = _declare(
    "KUBETASKS_CLIENT_SPIN_MICROSECONDS", _count, 100,
    "kubetasks.Client: microseconds an enqueue polls for its reply before it sleeps (0: it"
    " sleeps at once). Waking a sleeping thread costs more than the reply takes on a VM.",
)  # fmt: skip
LOG_LEVEL = _declare(
    "KUBETASKS_LOG_LEVEL", _text, "info",
    "Default of --log-level (debug, info, warning, error).", CHART,
)  # fmt: skip
NAMESPACE = _declare(
    "KUBETASKS_NAMESPACE", _text, "",
    "Namespace whose queues a client or the CLI addresses (default the pod's, else default).",
)  # fmt: skip
# Set from the downward API: by the chart on the operator, by the operator on every worker.
POD_NAME = _declare(
    "POD_NAME", _text, "",
    "Name of this pod: the operator's peering identity, the worker's lease identity.", CHART,
)  # fmt: skip
POD_NAMESPACE = _declare(
    "POD_NAMESPACE", _text, "",
    "Namespace of this pod: a worker serves the queues of this namespace only.", CHART,
)  # fmt: skip

# -- The operator -------------------------------------------------------------------------
PEERING_PRIORITY = _declare(
    "KUBETASKS_PEERING_PRIORITY", int, 0,
    "kopf peering priority of this operator (the highest active one runs; equals freeze).",
    CHART,
)  # fmt: skip
RESYNC_SECONDS = _declare(
    "KUBETASKS_RESYNC_SECONDS", float, 60.0,
    "Seconds between checks of Redis against the Task resources (and repairs).",
)  # fmt: skip
EVENTS = _declare(
    "KUBETASKS_EVENTS", _text, "all",
    "Which Task transitions post Kubernetes Events: all, failures or none.",
)  # fmt: skip
PROGRESS_INTERVAL_SECONDS = _declare(
    "KUBETASKS_PROGRESS_INTERVAL_SECONDS", float, 3.0,
    "Workers: least seconds between two Task status writes for ctx.progress of one Task.",
)  # fmt: skip
STATUS_GRACE_SECONDS = _declare(
    "KUBETASKS_STATUS_GRACE_SECONDS", float, 1.0,
    "Seconds a queued Task may go without its finalizer and Queued status.",
)  # fmt: skip
QUEUED_WRITES_PER_SECOND = _declare(
    "KUBETASKS_QUEUED_WRITES_PER_SECOND", float, 10.0,
    "Budget of those deferred writes per second (ten seconds' worth may be saved up).",
)  # fmt: skip
EVENTS_PER_SECOND = _declare(
    "KUBETASKS_EVENTS_PER_SECOND", float, 20.0,
    "Budget of Task transition Events per second (bursts of five times as many).",
)  # fmt: skip
HISTORY_SWEEP_SECONDS = _declare(
    "KUBETASKS_HISTORY_SWEEP_SECONDS", float, 600.0,
    "Seconds between sweeps of the finished Tasks (TTLs, deletions no operator saw); the"
    " first comes a minute after start-up, or this long if shorter.",
)  # fmt: skip
DEFAULT_TTL_SECONDS_AFTER_FINISHED: EnvVar[int | None] = _declare(
    "KUBETASKS_DEFAULT_TTL_SECONDS_AFTER_FINISHED", int, None,
    "Seconds after which a finished Task that sets no TTL (nor its Queue) is deleted;"
    " empty: kept.", CHART,
)  # fmt: skip

# -- What the operator gives every worker Deployment -----------------------------------------
WORKER_IMAGE = _declare(
    "KUBETASKS_WORKER_IMAGE", _text, "ghcr.io/kubetasks/worker:0.1.0",
    "Image of the worker pods of a WorkerPool that names none.", CHART,
)  # fmt: skip
WORKER_SERVICE_ACCOUNT = _declare(
    "KUBETASKS_WORKER_SERVICE_ACCOUNT", _text, "",
    "Service account of the worker pods of a WorkerPool that names none.", CHART,
)  # fmt: skip
WORKER_REDIS_URL = _declare(
    "KUBETASKS_WORKER_REDIS_URL", _text, "",
    "Redis URL of the worker pods when it differs from the operator's (default the same).",
)  # fmt: skip
POOL_REDIS_USERS = _declare(
    "KUBETASKS_POOL_REDIS_USERS", _flag, False,
    "Give each WorkerPool its own Redis ACL user and credential Secret (needs a password).",
    CHART,
)  # fmt: skip
REDIS_SECRET = _declare(
    "KUBETASKS_REDIS_SECRET", _text, "",
    "Secret with the Redis password, referenced by every worker pod (never copied).", CHART,
)  # fmt: skip
REDIS_SECRET_KEY = _declare(
    "KUBETASKS_REDIS_SECRET_KEY", _text, "password",
    "Key of the password in that Secret.", CHART,
)  # fmt: skip
REDIS_CA_SECRET = _declare(
    "KUBETASKS_REDIS_CA_SECRET", _text, "",
    f"Secret with the Redis CA certificate, mounted in every worker pod under {REDIS_CA_DIR};"
    " it must exist in each pool's namespace.", CHART,
)  # fmt: skip
REDIS_CA_KEY = _declare(
    "KUBETASKS_REDIS_CA_KEY", _text, "ca.crt",
    "Key of the certificate in that Secret (also the mounted file's name).", CHART,
)  # fmt: skip
WORKER_METRICS_PORT = _declare(
    "KUBETASKS_WORKER_METRICS_PORT", int, 9090,
    "Port of every worker pod's Prometheus /metrics (container port named metrics); 0: off.",
    CHART,
)  # fmt: skip
WORKER_POD_LABELS: EnvVar[dict[str, str]] = _declare(
    "KUBETASKS_WORKER_POD_LABELS", _labels, {},
    "Labels added to every worker pod, as a=1,b=2 (the local environment marks its pods).",
)  # fmt: skip

# -- What a WorkerPool may ask for (controller/poolpolicy.py) --------------------------------
# Patterns: NAME exactly, PREFIX* by prefix, * anything; images: a repository with any tag.
POOL_SERVICE_ACCOUNTS: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_SERVICE_ACCOUNTS", _names, (),
    "Service accounts (patterns) WorkerPools may name besides the worker one.", CHART,
)  # fmt: skip
POOL_SERVICE_ACCOUNT_SELECTOR = _declare(
    "KUBETASKS_POOL_SERVICE_ACCOUNT_SELECTOR", _text, "kubetasks.dev/worker=true",
    "Labels (key=value,...) that let WorkerPools name a ServiceAccount.", CHART,
)  # fmt: skip
POOL_IMAGES: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_IMAGES", _names, (),
    "Images (patterns) WorkerPools may run besides the worker image's repository.", CHART,
)  # fmt: skip
POOL_PRIORITY_CLASSES: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_PRIORITY_CLASSES", _names, (),
    "Priority classes (patterns) WorkerPools may use; none by default.", CHART,
)  # fmt: skip
POOL_ENV_SECRETS: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_ENV_SECRETS", _names, (),
    "Secrets (patterns) the env of WorkerPools may read; none by default.", CHART,
)  # fmt: skip
POOL_ENV_CONFIGMAPS: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_ENV_CONFIGMAPS", _names, (),
    "ConfigMaps (patterns) the env of WorkerPools may read; none by default.", CHART,
)  # fmt: skip
POOL_DENIED_ANNOTATIONS: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_DENIED_ANNOTATIONS", _names, (),
    "Pod annotation keys (patterns) WorkerPools may not set, besides the pod security ones.",
    CHART,
)  # fmt: skip
POOL_ALLOWED_NODE_TAINTS: EnvVar[tuple[str, ...]] = _declare(
    "KUBETASKS_POOL_ALLOWED_NODE_TAINTS", _names, (),
    "node.kubernetes.io/ and node-role.kubernetes.io/ taints (patterns) WorkerPools may"
    " tolerate; none by default.", CHART,
)  # fmt: skip


# -- Kubernetes' own ------------------------------------------------------------------------
def _listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


DASHBOARD_LISTEN = _declare(
    "KUBETASKS_DASHBOARD_LISTEN", _listen, ("127.0.0.1", 8080),
    "Dashboard: the host:port it serves on (kubetasks dashboard --listen).",
)  # fmt: skip
DASHBOARD_SAMPLE_SECONDS = _declare(
    "KUBETASKS_DASHBOARD_SAMPLE_SECONDS", float, 10.0,
    "Dashboard: seconds between two samples of every queue and pool for its graphs (an"
    " hour of them is kept in memory).",
)  # fmt: skip
DASHBOARD_REVIEW_SECONDS = _declare(
    "KUBETASKS_DASHBOARD_REVIEW_SECONDS", float, 10.0,
    "Dashboard: seconds a TokenReview or SubjectAccessReview answer is reused.",
)  # fmt: skip
DASHBOARD_SECURE_COOKIE = _declare(
    "KUBETASKS_DASHBOARD_SECURE_COOKIE", _flag, False,
    "Dashboard: mark the login cookie Secure (set it when users reach it over HTTPS).",
)  # fmt: skip


KUBERNETES_SERVICE_HOST = _declare(
    "KUBERNETES_SERVICE_HOST", _text, "",
    "Set by the kubelet in every pod: the in-cluster service account is used.", "kubernetes",
)  # fmt: skip
KUBECONFIG = _declare(
    "KUBECONFIG", _text, "",
    "The kubeconfig outside a cluster (default ~/.kube/config).", "kubernetes",
)  # fmt: skip


def redis_url(explicit: str | None = None) -> str:
    """The Redis URL: the explicit one, else ``$KUBETASKS_REDIS_URL``, else localhost.

    A password in ``$KUBETASKS_REDIS_PASSWORD`` (mounted from a Secret) is added to a URL
    that has none, so the URL itself can live in a ConfigMap; with the ACL user
    ``$KUBETASKS_REDIS_USERNAME`` when one is set.
    """
    url = explicit or REDIS_URL.get()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"{REDIS_URL.name} must start with redis://, rediss:// or unix://, got {url!r}"
        )
    password = REDIS_PASSWORD.get()
    if password and "@" not in url.split("//", 1)[1].split("/", 1)[0]:
        from urllib.parse import quote

        scheme, rest = url.split("//", 1)
        user = quote(REDIS_USERNAME.get(), safe="")
        url = f"{scheme}//{user}:{quote(password, safe='')}@{rest}"
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
    chosen = explicit or NAMESPACE.get() or POD_NAMESPACE.get() or DEFAULT_NAMESPACE
    return validate_namespace(chosen, "--namespace" if explicit else NAMESPACE.name)


def worker_namespace(explicit: str | None = None) -> str:
    """The namespace whose queues a worker serves. In a pod it is the pod's namespace and
    nothing else: a worker never takes the tasks of another namespace, which would run them
    with this pod's image, service account, secrets and network position. Outside a pod it
    is chosen as for a client."""
    pod = POD_NAMESPACE.get()
    if pod:
        if explicit and explicit != pod:
            raise ConfigurationError(
                f"--namespace {explicit!r}: a worker in a pod serves the queues of its own"
                f" namespace ({pod!r}) only"
            )
        return validate_namespace(pod, POD_NAMESPACE.name)
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
    pod = POD_NAME.get()
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
    return POD_NAME.get() or f"{socket.gethostname()}-{os.getpid()}"


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
    prefetch: int | None = None
    """Tasks leased ahead of free slots while there is a backlog, held in the worker until a
    slot frees (their leases kept alive like those of running tasks, handed back unspent at
    shutdown): a slot that frees starts the next task without a round trip, and leases come
    in larger batches. None: as many as ``concurrency``; 0: lease only for free slots."""
    prefetch_below: float = 0.05
    """Lease ahead only while this worker's recent tasks ran shorter than this many seconds
    on average: for short tasks the saved round trip is much of each task's cost, while a
    long task buffered behind running ones would wait for them as another worker idles."""
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
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigurationError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.prefetch_below < 0:
            raise ConfigurationError(
                f"prefetch_below must be >= 0 seconds, got {self.prefetch_below}"
            )

    @property
    def beat_every(self) -> float:
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def lease_ahead(self) -> int:
        """Tasks held leased beyond the free slots at most (``prefetch`` resolved)."""
        return self.concurrency if self.prefetch is None else self.prefetch


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
