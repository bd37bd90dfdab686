"""What a WorkerPool may ask for of the pods the operator creates for it (pure).

A WorkerPool is pod creation in disguise: the operator, not the namespace user, creates the
Deployment, so whoever may create a WorkerPool would otherwise run any image under any
service account of the namespace, with env from any of its Secrets, at any priority, on any
node. The platform team bounds that once, operator-wide (chart values ``poolPolicy``, read
from the ``KUBETASKS_POOL_*`` environment at start-up, see ``settings.py``), and the operator
checks every pool against it before it applies the pool's Deployment: a refused pool gets a
``PolicyViolation`` condition and event naming each field, and no Deployment.

Pod security fields are never the pool's to ask for: the operator writes the security
contexts itself (``workloads.deployment``) and the pod template overrides cannot reach them.
The annotations that would weaken them (AppArmor, the legacy seccomp ones) are refused here.

The check is two steps around the I/O the caller does: :func:`references` names the service
account whose labels decide (one the pool names and the names alone do not allow), the caller
reads its labels, and :func:`check` decides from what was found. Env sources are allowed by
name only: the operator never reads Secrets or ConfigMaps (its RBAC has no rule on them), so
their labels cannot be checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubetasks.errors import ConfigurationError

#: Annotation keys no pool sets, whatever the settings: they weaken the pod security the
#: operator sets (AppArmor profiles, the legacy seccomp annotations) or are the operator's
#: own (the deletion cost it sets to choose which pods go first).
SECURITY_ANNOTATIONS = (
    "container.apparmor.security.beta.kubernetes.io/*",
    "seccomp.security.alpha.kubernetes.io/*",
    "container.seccomp.security.alpha.kubernetes.io/*",
    "controller.kubernetes.io/pod-deletion-cost",
)
#: Taint keys pools may not tolerate unless allowed by name: the control plane's nodes, and
#: the node conditions (not ready, unreachable, pressure, cordoned) that keep or evict pods.
NODE_TAINTS = ("node-role.kubernetes.io/*", "node.kubernetes.io/*")

Kind = Literal["Secret", "ConfigMap"]


@dataclass(frozen=True, slots=True)
class LookupFailed:
    """The labels of an object could not be read (the message says why)."""

    reason: str


#: What the caller found for each service account :func:`references` named: its labels,
#: None (it does not exist), or why they could not be read.
Found = Mapping[str, Mapping[str, str] | LookupFailed | None]


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    """Path of the refused field in the WorkerPool, e.g. ``spec.podTemplate.env[0]``."""
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Selector:
    """An equality-based label selector (``key=value`` or ``key`` for presence, comma
    separated); empty matches nothing."""

    terms: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str, setting: str) -> Selector:
        terms: list[tuple[str, str | None]] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, eq, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not key or "!" in key or (eq and not value):
                raise ConfigurationError(
                    f"{setting}: {part!r} is not key=value or key (equality selectors only)"
                )
            terms.append((key, value if eq else None))
        return cls(tuple(terms))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.terms) and all(
            key in labels and (value is None or labels[key] == value) for key, value in self.terms
        )

    def __str__(self) -> str:
        return ",".join(k if v is None else f"{k}={v}" for k, v in self.terms)


def matches(pattern: str, name: str) -> bool:
    """A name pattern of the settings: ``*`` anything, ``prefix*`` a prefix, else exact."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def image_allowed(pattern: str, image: str) -> bool:
    """An image pattern: ``*`` any, ``prefix*`` a prefix, else one repository with any tag
    or digest (``ghcr.io/kubetasks/worker`` allows ``ghcr.io/kubetasks/worker:1.2``, not
    ``ghcr.io/kubetasks/worker-other``)."""
    if pattern.endswith("*"):
        return image.startswith(pattern[:-1])
    return image == pattern or image.startswith((pattern + ":", pattern + "@"))


def repository(image: str) -> str:
    """The image without its tag or digest: ``host:5000/a/b:1`` -> ``host:5000/a/b``."""
    name = image.split("@", 1)[0]
    head, colon, tag = name.rpartition(":")
    return head if colon and "/" not in tag else name


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """What pools may ask for. The operator's own worker image and service account (the
    ones a pool gets when it names none) are always allowed."""

    worker_image: str = ""
    """The operator's worker image (``KUBETASKS_WORKER_IMAGE``): its repository is allowed
    with any tag."""
    worker_service_account: str = ""
    """The operator's worker service account (``KUBETASKS_WORKER_SERVICE_ACCOUNT``)."""
    service_accounts: tuple[str, ...] = ()
    """Service account names (patterns) pools may name besides it. Default none."""
    service_account_selector: Selector = Selector()
    """Labels that let a ServiceAccount be named by pools (the operator's setting defaults to
    ``kubetasks.dev/worker=true``). Empty: by name only."""
    images: tuple[str, ...] = ()
    """Image patterns pools may use besides the worker image (see :func:`image_allowed`).
    Default none."""
    priority_classes: tuple[str, ...] = ()
    """Priority class names (patterns) pools may use. Default none: only the default."""
    env_secrets: tuple[str, ...] = ()
    """Secret names (patterns) pools' env may read (``valueFrom.secretKeyRef``)."""
    env_config_maps: tuple[str, ...] = ()
    """ConfigMap names (patterns) pools' env may read (``valueFrom.configMapKeyRef``)."""
    denied_annotations: tuple[str, ...] = ()
    """Annotation key patterns pools may not set, besides :data:`SECURITY_ANNOTATIONS`
    (always refused). Default none."""
    allowed_node_taints: tuple[str, ...] = ()
    """Taint key patterns among :data:`NODE_TAINTS` that pools may tolerate. Default none.
    Tolerating every taint (an empty key with ``Exists``) is always refused."""

    def account_by_name(self, name: str) -> bool:
        return name == self.worker_service_account or _any(self.service_accounts, name)

    def source_by_name(self, kind: Kind, name: str) -> bool:
        return _any(self.env_secrets if kind == "Secret" else self.env_config_maps, name)


def references(spec: Mapping[str, Any], policy: PoolPolicy) -> set[str]:
    """The service accounts whose labels :func:`check` needs: the one the pool names, when
    its name alone does not allow it and a selector could."""
    account = _template(spec).get("serviceAccountName")
    if account and not policy.account_by_name(account) and policy.service_account_selector.terms:
        return {account}
    return set()


def check(spec: Mapping[str, Any], policy: PoolPolicy, found: Found) -> list[Violation]:
    """Every way the pool's spec asks for more than the policy allows, each naming its
    field; ``found`` holds the labels of the :func:`references` the caller read."""
    template = _template(spec)
    violations: list[Violation] = []

    image = spec.get("image")
    if image and not _image_ok(policy, image):
        allowed = [repository(policy.worker_image), *policy.images]
        violations.append(
            Violation(
                "spec.image",
                f"{image!r} is not an allowed worker image (allowed: {_listing(allowed)})",
            )
        )

    account = template.get("serviceAccountName")
    if account and not policy.account_by_name(account):
        why = _by_label(found, account, policy.service_account_selector)
        if why:
            allowed = [policy.worker_service_account, *policy.service_accounts]
            if policy.service_account_selector.terms:
                allowed.append(f"labelled {policy.service_account_selector}")
            violations.append(
                Violation(
                    "spec.podTemplate.serviceAccountName",
                    f"{account!r} is not a worker service account: {why}"
                    f" (allowed: {_listing(allowed)})",
                )
            )

    priority = template.get("priorityClassName")
    if priority and not _any(policy.priority_classes, priority):
        violations.append(
            Violation(
                "spec.podTemplate.priorityClassName",
                f"{priority!r} is not an allowed priority class"
                f" (allowed: {_listing(policy.priority_classes)})",
            )
        )

    for path, kind, name in _env_sources(spec):
        if not policy.source_by_name(kind, name):
            names = policy.env_secrets if kind == "Secret" else policy.env_config_maps
            violations.append(
                Violation(
                    path,
                    f"{kind} {name!r} is not a worker env source (allowed: {_listing(names)})",
                )
            )

    for key in template.get("annotations") or {}:
        if _any(SECURITY_ANNOTATIONS, key):
            why = "pod security and the operator's own annotations are not the pool's to set"
        elif _any(policy.denied_annotations, key):
            why = f"refused by the operator (denied: {_listing(policy.denied_annotations)})"
        else:
            continue
        violations.append(Violation(f"spec.podTemplate.annotations[{key!r}]", why))

    for i, toleration in enumerate(template.get("tolerations") or []):
        path = f"spec.podTemplate.tolerations[{i}]"
        key = toleration.get("key") or ""
        if not key and toleration.get("operator") == "Exists":
            violations.append(
                Violation(path, "tolerates every taint (an empty key with operator Exists)")
            )
        elif _any(NODE_TAINTS, key) and not _any(policy.allowed_node_taints, key):
            violations.append(
                Violation(
                    f"{path}.key",
                    f"{key!r} is a node taint pools may not tolerate"
                    f" (allowed: {_listing(policy.allowed_node_taints)})",
                )
            )
    return violations


def _template(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.get("podTemplate") or {}


_ENV_REFS: tuple[tuple[str, Kind], ...] = (
    ("secretKeyRef", "Secret"),
    ("configMapKeyRef", "ConfigMap"),
)


def _env_sources(spec: Mapping[str, Any]) -> Iterator[tuple[str, Kind, str]]:
    """(field path, kind, name) of each Secret or ConfigMap the pool's env reads."""
    for i, entry in enumerate(_template(spec).get("env") or []):
        source = entry.get("valueFrom") if isinstance(entry, Mapping) else None
        if not isinstance(source, Mapping):
            continue
        for field, kind in _ENV_REFS:
            ref = source.get(field)
            if isinstance(ref, Mapping):
                path = f"spec.podTemplate.env[{i}].valueFrom.{field}.name"
                yield path, kind, str(ref.get("name") or "")


def _by_label(found: Found, account: str, selector: Selector) -> str | None:
    """None when the service account's labels allow it, else why not."""
    if not selector.terms:
        return "not listed by name"
    labels = found.get(account, LookupFailed("its labels were not read"))
    if isinstance(labels, LookupFailed):
        return f"its labels could not be read ({labels.reason})"
    if labels is None:
        return "it does not exist"
    if selector.matches(labels):
        return None
    return f"it is not labelled {selector}"


def _image_ok(policy: PoolPolicy, image: str) -> bool:
    own = repository(policy.worker_image) if policy.worker_image else None
    return (own is not None and image_allowed(own, image)) or any(
        image_allowed(p, image) for p in policy.images
    )


def _any(patterns: tuple[str, ...], name: str) -> bool:
    return any(matches(p, name) for p in patterns)


def _listing(items: list[str] | tuple[str, ...]) -> str:
    shown = [i for i in items if i]
    return ", ".join(shown) if shown else "none"
