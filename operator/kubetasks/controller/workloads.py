"""The Deployment a WorkerPool runs as (pure: pool in, manifest out).

The operator owns one Deployment per WorkerPool and applies it with server-side apply; this
module decides what it contains: ``kubetasks worker`` with the pool's queues, concurrency
and handler modules, the restricted security context every worker gets, and the pod
template overrides the pool asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetasks import settings
from kubetasks.controller.poolpolicy import PoolPolicy, Selector
from kubetasks.controller.poolusers import PASSWORD_KEY, PoolCredentials
from kubetasks.vocabulary import POOL_LABEL

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: Environment variables of the worker container a pool's ``podTemplate.env`` cannot set:
#: the pod's identity, and how it reaches Redis.
OPERATOR_ENV = frozenset(
    {
        settings.POD_NAME.name,
        settings.POD_NAMESPACE.name,
        settings.NAMESPACE.name,
        settings.REDIS_URL.name,
        settings.REDIS_USERNAME.name,
        settings.REDIS_PASSWORD.name,
    }
)
#: The worker pod's volume with the Redis CA certificate (``KUBETASKS_REDIS_CA_SECRET``).
REDIS_CA_VOLUME = "redis-tls"
#: Name of the worker container's Prometheus port (the chart's PodMonitor scrapes it).
METRICS_PORT_NAME = "metrics"
#: Seconds a worker keeps for itself at the end of the grace period to hand tasks back.
HANDBACK_SECONDS = 5
#: Pod spec fields a pool's ``podTemplate`` sets as given (Kubernetes' own shapes), within
#: the pool policy (``poolpolicy.py``). Never a security context, host namespace or volume:
#: pod security is the operator's.
POD_SPEC_OVERRIDES = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "imagePullSecrets",
    "priorityClassName",
)


@dataclass(frozen=True)
class WorkloadDefaults:
    """What the operator's own environment (set by the Helm chart) gives every pool; each
    field's variable is declared in ``kubetasks.settings``."""

    image: str = field(default_factory=settings.WORKER_IMAGE.get)
    service_account: str = field(default_factory=settings.WORKER_SERVICE_ACCOUNT.get)
    redis_url: str = field(
        default_factory=lambda: settings.WORKER_REDIS_URL.get() or settings.REDIS_URL.get()
    )
    """The workers' Redis URL: the operator's unless ``KUBETASKS_WORKER_REDIS_URL`` differs."""
    redis_username: str = field(default_factory=settings.REDIS_USERNAME.get)
    """The Redis user of that shared password: the operator's (empty: the default user).
    Unused when pools have their own users (``controller/poolusers.py``)."""
    redis_secret: str = field(default_factory=settings.REDIS_SECRET.get)
    """Secret with the shared Redis password (optional), referenced from the pool's
    namespace. Unused when pools have their own users."""
    redis_secret_key: str = field(default_factory=settings.REDIS_SECRET_KEY.get)
    """Key of the password in that Secret."""
    redis_ca_secret: str = field(default_factory=settings.REDIS_CA_SECRET.get)
    """Secret with the Redis CA certificate (optional), mounted under ``REDIS_CA_DIR`` where
    the URL's ``ssl_ca_certs`` points; like the password Secret it must exist in the pool's
    namespace."""
    redis_ca_key: str = field(default_factory=settings.REDIS_CA_KEY.get)
    """Key of the certificate in that Secret, and the name of the mounted file."""
    metrics_port: int = field(default_factory=settings.WORKER_METRICS_PORT.get)
    """Port of each worker's Prometheus ``/metrics``, the container port named ``metrics``
    (0: the workers serve none)."""
    extra_labels: dict[str, str] = field(default_factory=settings.WORKER_POD_LABELS.get)
    """Labels added to every worker pod (the local dev env marks them for its kubelet)."""

    def policy(self) -> PoolPolicy:
        """What pools may ask for, from the operator's ``KUBETASKS_POOL_*`` environment (chart
        values ``poolPolicy``); this image and service account are always allowed."""
        return PoolPolicy(
            worker_image=self.image,
            worker_service_account=self.service_account,
            service_accounts=settings.POOL_SERVICE_ACCOUNTS.get(),
            service_account_selector=Selector.parse(
                settings.POOL_SERVICE_ACCOUNT_SELECTOR.get(),
                settings.POOL_SERVICE_ACCOUNT_SELECTOR.name,
            ),
            images=settings.POOL_IMAGES.get(),
            priority_classes=settings.POOL_PRIORITY_CLASSES.get(),
            env_secrets=settings.POOL_ENV_SECRETS.get(),
            env_config_maps=settings.POOL_ENV_CONFIGMAPS.get(),
            denied_annotations=settings.POOL_DENIED_ANNOTATIONS.get(),
            allowed_node_taints=settings.POOL_ALLOWED_NODE_TAINTS.get(),
        )


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def worker_args(spec: dict[str, Any], metrics_port: int = 0) -> list[str]:
    queues = ",".join(f"{q['name']}:{q.get('weight', 1)}" for q in spec["queues"])
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    args = [
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(spec.get("concurrency", 10)),
        "--grace-period",
        str(max(grace - HANDBACK_SECONDS, 1)),
    ]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    if spec.get("strictPriority"):
        args.append("--strict")
    if spec.get("allowHttp"):
        args.append("--allow-http")
    for module in spec.get("imports") or []:
        args += ["--import", module]
    return args


def _redis_credentials_env(
    defaults: WorkloadDefaults, credentials: PoolCredentials | None
) -> list[dict[str, Any]]:
    """The pool's own Redis user and its Secret, else the shared password (if any)."""
    if credentials is not None:
        user, secret_ref = credentials.username, {"name": credentials.secret, "key": PASSWORD_KEY}
    elif defaults.redis_secret:
        user = defaults.redis_username
        secret_ref = {"name": defaults.redis_secret, "key": defaults.redis_secret_key}
    else:
        return []
    env = [{"name": settings.REDIS_PASSWORD.name, "valueFrom": {"secretKeyRef": secret_ref}}]
    if user:
        env.append({"name": settings.REDIS_USERNAME.name, "value": user})
    return env


def deployment(
    pool: dict[str, Any],
    replicas: int,
    defaults: WorkloadDefaults,
    credentials: PoolCredentials | None = None,
) -> dict[str, Any]:
    """The pool's Deployment; its workers log in to Redis as ``credentials`` when the pool
    has its own user, else with the shared password of ``defaults``."""
    meta = pool["metadata"]
    spec = pool["spec"]
    name = meta["name"]
    overrides = spec.get("podTemplate") or {}
    labels = {
        "app.kubernetes.io/name": "kubetasks-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "kubetasks",
        POOL_LABEL: name,
    }
    env: list[dict[str, Any]] = [
        _field_env(settings.POD_NAME.name, "metadata.name"),
        _field_env(settings.POD_NAMESPACE.name, "metadata.namespace"),
    ]
    if defaults.redis_url:
        env.append({"name": settings.REDIS_URL.name, "value": defaults.redis_url})
    env += _redis_credentials_env(defaults, credentials)
    # The pod's identity is the worker's: a pool that set POD_NAMESPACE itself would have its
    # workers serve (and run with this pod's secrets) the queues of another namespace. Its
    # Redis login is the operator's choice too (the pool's own user, or the shared one).
    env += [e for e in overrides.get("env") or [] if e.get("name") not in OPERATOR_ENV]
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.get("image") or defaults.image,
        "command": ["kubetasks"],
        "args": worker_args(spec, defaults.metrics_port),
        "env": env,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if defaults.metrics_port:
        # Named, so that the chart's PodMonitor and NetworkPolicy find it by name.
        container["ports"] = [
            {"name": METRICS_PORT_NAME, "containerPort": defaults.metrics_port, "protocol": "TCP"}
        ]
    if overrides.get("resources"):
        container["resources"] = overrides["resources"]
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": int(spec.get("terminationGracePeriodSeconds", 30)),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if defaults.redis_ca_secret:
        # The same path as in the operator pod, so the URL's ssl_ca_certs holds for both.
        container["volumeMounts"] = [
            {"name": REDIS_CA_VOLUME, "mountPath": settings.REDIS_CA_DIR, "readOnly": True}
        ]
        pod_spec["volumes"] = [
            {
                "name": REDIS_CA_VOLUME,
                "secret": {
                    "secretName": defaults.redis_ca_secret,
                    "items": [{"key": defaults.redis_ca_key, "path": defaults.redis_ca_key}],
                },
            }
        ]
    account = overrides.get("serviceAccountName") or defaults.service_account
    if account:
        pod_spec["serviceAccountName"] = account
    for key in POD_SPEC_OVERRIDES:
        if overrides.get(key):
            pod_spec[key] = overrides[key]
    template_meta: dict[str, Any] = {
        # The pool's own labels last: the Deployment's selector depends on them.
        "labels": (overrides.get("labels") or {}) | labels | defaults.extra_labels
    }
    if overrides.get("annotations"):
        template_meta["annotations"] = dict(overrides["annotations"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": pool["apiVersion"],
                    "kind": pool["kind"],
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {POOL_LABEL: name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
