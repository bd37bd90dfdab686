"""Every Redis key kubetasks uses, built in one place.

All keys start with ``kubetasks:``. A queue is (namespace, name), and every key of one queue
carries both in the hash tag ``{namespace/name}``: a queue lives in one Redis Cluster slot,
each Lua script touches one slot only, and nothing of one namespace's queue (tasks, unique
locks, counters, settings) shares a key with another namespace's queue of the same name.
Scripts that address per-task keys receive a *prefix* from here and append the task id or
unique key; they never invent a key layout of their own.

Layout of queue ``q`` of namespace ``ns`` (``{q}`` below stands for ``{ns/q}``)::

    kubetasks:{q}:pending      ZSET  id -> -priority * 2**40 + seq   (highest priority, then FIFO)
    kubetasks:{q}:scheduled    ZSET  id -> due time (ms)             (delayed tasks and retries)
    kubetasks:{q}:active       ZSET  id -> lease expiry (ms)
    kubetasks:{q}:dead         ZSET  id -> time of final failure (ms)
    kubetasks:{q}:seq          STRING  enqueue counter (FIFO order inside a priority)
    kubetasks:{q}:notify       LIST  wake-up tokens for idle workers (capped)
    kubetasks:{q}:stats        HASH  processed, failed (cumulative counters)
    kubetasks:{q}:t:<id>       HASH  one task: message, state, attempts, result, error, ...
    kubetasks:{q}:u:<key>      STRING  unique-key lock -> task id (with TTL)
    kubetasks:{q}:config       HASH  the queue's settings from its Queue resource (paused,
                                     max_in_flight, rate, burst, timeouts, retention)
    kubetasks:{q}:bucket       HASH  rate-limit token bucket: tokens, at (ms)
    kubetasks:{q}:deadlines    ZSET  id -> deadline (ms) of tasks enqueued with one
    kubetasks:{q}:s:<uid>      HASH  one TaskSet's items on this queue: total, next (items
                                     enqueued so far, by index), name
    kubetasks:{q}:s:<uid>:done / :failed / :run   SET  indexes of the items that succeeded,
                                     failed for good, are running now (updated by the same
                                     script that moves the item)
    kubetasks:{q}:s:<uid>:results  HASH  index -> result JSON of the items that returned one
    kubetasks:{q}:s:<uid>:errors   HASH  index -> error JSON of the first failed items
    kubetasks:{q}:s:<uid>:progress HASH  index -> fraction a running item last reported
    kubetasks:queues           SET   ``ns/q`` of all queues ever used (outside any slot)
    kubetasks:epoch            STRING  a token the operator writes when it finds none: its
                                     disappearance means the server lost its data
    kubetasks:enqueued         pub/sub channel: ``ns/q``, on each enqueue
    kubetasks:worker:<id>      HASH  one worker's load report (ids are ``ns/pod`` in a pod)

Keys of the layout before namespaces (``kubetasks:{q}:...``, registry entries without a
``/``) are never read: see the README's upgrade note.
"""

from __future__ import annotations

from kubetasks.queuename import qualified, validate_namespace, validate_queue_name

ROOT = "kubetasks"
QUEUES = f"{ROOT}:queues"
#: Pub/sub channel on which every enqueue publishes its queue's name.
ENQUEUED = f"{ROOT}:enqueued"
WORKERS = f"{ROOT}:workers"
#: The data epoch marker (see ``controller/epoch.py``).
EPOCH = f"{ROOT}:epoch"


class QueueKeys:
    """The keys of one queue. Cheap to build; cache one per queue on hot paths."""

    __slots__ = (
        "active",
        "bucket",
        "config",
        "dead",
        "deadlines",
        "name",
        "namespace",
        "notify",
        "pending",
        "prefix",
        "qualified",
        "scheduled",
        "seq",
        "set_prefix",
        "stats",
        "task_prefix",
        "unique_prefix",
    )

    def __init__(self, namespace: str, queue: str) -> None:
        self.namespace = validate_namespace(namespace)
        self.name = validate_queue_name(queue)
        self.qualified = qualified(namespace, queue)
        self.prefix = f"{ROOT}:{{{self.qualified}}}:"
        self.pending = self.prefix + "pending"
        self.scheduled = self.prefix + "scheduled"
        self.active = self.prefix + "active"
        self.dead = self.prefix + "dead"
        self.seq = self.prefix + "seq"
        self.notify = self.prefix + "notify"
        self.stats = self.prefix + "stats"
        self.config = self.prefix + "config"
        self.bucket = self.prefix + "bucket"
        self.deadlines = self.prefix + "deadlines"
        self.task_prefix = self.prefix + "t:"
        self.unique_prefix = self.prefix + "u:"
        self.set_prefix = self.prefix + "s:"

    def task(self, task_id: str) -> str:
        return self.task_prefix + task_id

    def unique(self, unique_key: str) -> str:
        return self.unique_prefix + unique_key

    def taskset(self, uid: str) -> SetKeys:
        return SetKeys(self.set_prefix + uid)


class SetKeys:
    """The keys of one TaskSet's items on its queue (all in the queue's slot: the scripts
    that end an item update them in the same call)."""

    __slots__ = ("done", "errors", "failed", "key", "progress", "results", "run")

    def __init__(self, key: str) -> None:
        self.key = key
        self.done = key + ":done"
        self.failed = key + ":failed"
        self.run = key + ":run"
        self.results = key + ":results"
        self.errors = key + ":errors"
        self.progress = key + ":progress"
        """index -> the fraction a running item last reported (``item_progress.lua``)."""

    def all(self) -> list[str]:
        return [
            self.key, self.done, self.failed, self.run, self.results, self.errors, self.progress,
        ]  # fmt: skip


def worker_key(worker_id: str) -> str:
    """Heartbeat record of one worker process (what it holds, when it last beat)."""
    return f"{ROOT}:worker:{worker_id}"


def namespace_patterns(namespace: str) -> tuple[str, str]:
    """Redis ACL key patterns (globs) of everything of one namespace a worker there touches:
    its queues' keys (``kubetasks:{ns/*``) and its workers' load reports
    (``kubetasks:worker:ns/*``). Namespace names hold no glob characters, and the ``/`` after
    the name keeps ``team`` from matching ``team-a``."""
    ns = validate_namespace(namespace)
    return f"{ROOT}:{{{ns}/*", worker_key(f"{ns}/*")
