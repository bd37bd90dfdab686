"""The one module that asks the API server who a user is and what they may do.

The dashboard acts for the people who open it, with Kubernetes RBAC as the only source of
who may see and do what: a user's bearer token is checked with a TokenReview, and every read
and action with a SubjectAccessReview asked about that user (its name, groups, uid and
extra), so a RoleBinding decides the dashboard's answer exactly as it decides kubectl's.
Both reviews are sent with the dashboard's own credentials (``create tokenreviews`` and
``create subjectaccessreviews`` on the cluster).

Answers are cached for a few seconds (:class:`Reviewer`): a page view asks several
questions, and a user refreshing a page asks the same ones again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetasks.k8s.api import KubeApi
from kubetasks.vocabulary import GROUP


@dataclass(frozen=True, slots=True)
class User:
    """Who a token belongs to, as the TokenReview answered."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Access:
    """One question for a SubjectAccessReview: may the user do ``verb`` on ``resource``
    (of kubetasks' API group unless ``group`` says otherwise) in ``namespace``?"""

    verb: str
    resource: str
    namespace: str | None = None
    group: str = GROUP
    name: str | None = None

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.verb} {self.resource}.{self.group}{where}"


async def review_token(api: KubeApi, token: str) -> User | None:
    """The user of ``token``, or None when the API server does not accept it."""
    answer = await api.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
    )
    status = answer.get("status") or {}
    if not status.get("authenticated"):
        return None
    user = status.get("user") or {}
    return User(
        name=str(user.get("username", "")),
        uid=str(user.get("uid", "")),
        groups=tuple(user.get("groups") or ()),
        extra={k: list(v) for k, v in (user.get("extra") or {}).items()},
    )


async def review_access(api: KubeApi, user: User, access: Access) -> bool:
    """Whether RBAC (or whatever authorizer the cluster runs) allows ``access`` to ``user``."""
    attributes: dict[str, Any] = {
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
    }
    if access.namespace is not None:
        attributes["namespace"] = access.namespace
    if access.name is not None:
        attributes["name"] = access.name
    spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = user.extra
    spec["resourceAttributes"] = attributes
    answer = await api.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
    )
    return bool((answer.get("status") or {}).get("allowed"))


class Reviewer:
    """Token and access reviews with a short cache (``ttl`` seconds; the clock injected)."""

    def __init__(
        self, api: KubeApi, *, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.ttl = ttl
        self.clock = clock
        self._users: dict[str, tuple[float, User | None]] = {}
        self._access: dict[tuple[str, Access], tuple[float, bool]] = {}

    async def user(self, token: str) -> User | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # no token kept in memory as is
        now = self.clock()
        hit = self._users.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        user = await review_token(self.api, token)
        if len(self._users) > 10_000:
            self._users.clear()
        self._users[key] = (now, user)
        return user

    async def allowed(self, user: User, access: Access) -> bool:
        key = (f"{user.name}\0{user.uid}\0{','.join(user.groups)}", access)
        now = self.clock()
        hit = self._access.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        verdict = await review_access(self.api, user, access)
        if len(self._access) > 100_000:
            self._access.clear()
        self._access[key] = (now, verdict)
        return verdict
