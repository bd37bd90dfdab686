"""Tasks waiting for others (``dependsOn``), and what the operator last saw of the Tasks
they wait for.

The operator sees every Task event; this keeps only what dependencies need: which Tasks
wait on which, and the phase and result of a Task while something waits on it. (A kopf
index of every Task's phase and result did the same job, but held every result in memory
and cost a tenth of the operator's CPU at hundreds of Tasks a second.) What it does not
know, a dependency that ended before anything waited on it, the caller reads from the API;
a final phase never changes, so that answer is kept too.

A dependent is registered before its dependencies are looked up, so a dependency that ends
while the lookup is in flight still finds it waiting and re-admits it. Admitting twice is
harmless (enqueue is idempotent by uid).
"""

from __future__ import annotations

from typing import Any

from kubetasks.vocabulary import FINAL_PHASES, TaskPhase

Key = tuple[str, str]  # (namespace, name)
Outcome = tuple[str | None, Any]  # (phase, result if Succeeded)

#: Phases in which a Task with dependencies may still be waiting for them.
UNADMITTED = (None, TaskPhase.PENDING, TaskPhase.WAITING)


def outcome(body: dict[str, Any]) -> Outcome:
    status = body.get("status") or {}
    phase = status.get("phase")
    return (phase, status.get("result") if phase == TaskPhase.SUCCEEDED else None)


class Dependents:
    def __init__(self) -> None:
        self._waiters: dict[Key, dict[str, dict[str, Any]]] = {}  # dependency -> uid -> body
        self._waiting_on: dict[str, tuple[Key, ...]] = {}  # dependent uid -> dependencies
        self._outcomes: dict[Key, Outcome] = {}  # only for dependencies with waiters
        self._unadmitted: dict[Key, dict[str, Any]] = {}  # dependents not admitted yet
        self._cycles: dict[Key, tuple[str, str]] = {}  # failed for a cycle: uid, cycle

    def observe(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Take in one event's Task; returns the Tasks to admit again because this one, a
        dependency of theirs, has just been seen in a final phase."""
        meta = body["metadata"]
        namespace, uid = meta.get("namespace") or "", meta["uid"]
        depends_on = (body.get("spec") or {}).get("dependsOn") or []
        phase = (body.get("status") or {}).get("phase")
        key = (namespace, meta["name"])
        if depends_on and phase in UNADMITTED and not meta.get("deletionTimestamp"):
            self._register(uid, tuple((namespace, d) for d in depends_on), body)
            self._unadmitted[key] = body
        else:
            self._unregister(uid)
            self._drop_unadmitted(key, uid)
        waiters = self._waiters.get(key)
        if not waiters:
            return []
        self._outcomes[key] = outcome(body)
        return list(waiters.values()) if phase in FINAL_PHASES else []

    def dependency_ended(self, namespace: str, name: str, found: Outcome) -> list[dict[str, Any]]:
        """A dependency that is not a Task (``taskset/<name>``) reached a final phase: the
        Tasks to admit again."""
        key = (namespace, name)
        waiters = self._waiters.get(key)
        if not waiters:
            return []
        self._outcomes[key] = found
        return list(waiters.values())

    def deleted(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self._unregister(meta["uid"])
        key = (meta.get("namespace") or "", meta["name"])
        self._drop_unadmitted(key, meta["uid"])
        if self._cycles.get(key, ("",))[0] == meta["uid"]:
            del self._cycles[key]
        if key in self._outcomes:
            self._outcomes[key] = (None, None)  # gone: its dependents wait for a new one

    def known(self, namespace: str, name: str) -> Outcome | None:
        """The outcome last seen for a dependency someone waits on, if any was seen."""
        return self._outcomes.get((namespace, name))

    def remember(self, namespace: str, name: str, found: Outcome) -> None:
        """Keep a final outcome read from the API (while something waits on it)."""
        key = (namespace, name)
        if found[0] in FINAL_PHASES and key in self._waiters:
            self._outcomes[key] = found

    def waiting(self) -> int:
        return len(self._waiting_on)

    def depends_on(self, namespace: str, name: str) -> list[str]:
        """The ``dependsOn`` of the not yet admitted Task of that name (empty if none is
        known): the edges along which a dependency cycle is looked for."""
        body = self._unadmitted.get((namespace, name))
        return list((body.get("spec") or {}).get("dependsOn") or []) if body else []

    def unadmitted(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The last body seen of the not yet admitted Task of that name, if any."""
        return self._unadmitted.get((namespace, name))

    def on_cycle(self, body: dict[str, Any], cycle: str) -> None:
        """The operator is ending this Task for the dependency ``cycle``: it waits no more,
        and until it is deleted, an admission of it that raced this one (and may have seen
        another Task of the cycle already Failed) fails it for the same cycle."""
        meta = body["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self._unregister(meta["uid"])
        self._drop_unadmitted(key, meta["uid"])
        self._cycles[key] = (meta["uid"], cycle)

    def cycle_of(self, namespace: str, name: str, uid: str) -> str | None:
        """The cycle this very Task (not a re-created one of its name) was failed for."""
        found = self._cycles.get((namespace, name))
        return found[1] if found is not None and found[0] == uid else None

    def _drop_unadmitted(self, key: Key, uid: str) -> None:
        body = self._unadmitted.get(key)
        if body is not None and body["metadata"]["uid"] == uid:
            del self._unadmitted[key]

    def _register(self, uid: str, deps: tuple[Key, ...], body: dict[str, Any]) -> None:
        if self._waiting_on.get(uid) != deps:
            self._unregister(uid)
            self._waiting_on[uid] = deps
        for key in deps:
            self._waiters.setdefault(key, {})[uid] = body

    def _unregister(self, uid: str) -> None:
        for key in self._waiting_on.pop(uid, ()):
            waiters = self._waiters.get(key)
            if waiters is None:
                continue
            waiters.pop(uid, None)
            if not waiters:
                del self._waiters[key]
                self._outcomes.pop(key, None)
