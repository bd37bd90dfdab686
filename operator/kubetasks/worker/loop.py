"""The worker: lease tasks in batches, run handlers concurrently, report in batches.

One fetch loop leases tasks in one script call per queue: as many as there are free slots,
and while there is a backlog up to ``prefetch`` more, held leased in a small buffer from
which a slot that frees starts its next task at once. One acker records successes in one
script call per batch ("group commit": while one ack is in flight, the next batch gathers),
and three small components keep leases (the buffered ones too), delayed tasks and crashed
workers in order. An idle worker blocks on its queues' wake-up lists, so a new task starts
without a polling delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubetasks import outcome as outcomes
from kubetasks.background import run_every
from kubetasks.errors import BrokerUnavailableError, TaskCancelledError, TaskTimeoutError
from kubetasks.metrics import WorkerMetrics
from kubetasks.queue import Broker, Leased
from kubetasks.queue.message import TaskMessage, dumps
from kubetasks.settings import QueueWeight, WorkerSettings
from kubetasks.worker import middleware, registry
from kubetasks.worker.context import TaskContext
from kubetasks.worker.heartbeat import Heartbeat
from kubetasks.worker.itemprogress import ItemProgress
from kubetasks.worker.promoter import Promoter
from kubetasks.worker.reclaimer import Reclaimer
from kubetasks.worker.sink import NullSink, StatusSink

log = logging.getLogger("kubetasks.worker")

#: Seconds before a worker asks an unreachable Redis again: how soon after its return work
#: resumes.
RETRY_SECONDS = 0.5


@dataclass(eq=False)
class Running:
    leased: Leased
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None
    """Why the worker stopped the handler: 'cancel', 'lost' or 'shutdown'."""
    started: float = 0.0
    """Monotonic start time, for the duration metric."""


def queue_order(
    queues: tuple[QueueWeight, ...], strict: bool, rand: Callable[[], float]
) -> list[str]:
    """Strict: by weight, highest first. Weighted: a random order in which each queue comes
    first with probability proportional to its weight (as asynq does)."""
    if strict or len(queues) == 1:
        return [q.name for q in sorted(queues, key=lambda q: -q.weight)]
    keyed = sorted(queues, key=lambda q: rand() ** (1.0 / q.weight), reverse=True)
    return [q.name for q in keyed]


class RunTimes:
    """A moving mean of how long this worker's tasks ran: whether leasing ahead pays. It
    does for short tasks, whose fetch round trip is much of their cost; a long task held
    behind running ones would wait for them while another worker may idle."""

    WEIGHT = 0.1
    """Of the newest run in the mean: the last twenty or so runs count."""

    def __init__(self) -> None:
        self.mean: float | None = None
        """Seconds; None before the first task ended."""

    def add(self, seconds: float) -> None:
        self.mean = (
            seconds if self.mean is None else self.mean + self.WEIGHT * (seconds - self.mean)
        )

    def short(self, below: float) -> bool:
        """Whether recent tasks ran shorter than ``below`` seconds (unknown: not short)."""
        return self.mean is not None and self.mean < below


def _task_line(where: str, fmt: str, *args: object) -> None:
    """One of the two INFO lines a task gets (started; ended), logged as ``log.info`` would,
    through the logger's filters and handlers, but without its caller lookup: a walk up
    the stack per record (``Logger.findCaller``), a fifth of a line's cost, for a place in
    the code that is always the same (``where``, the method; the line is not given)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, fmt, args, None, where)
    log.handle(record)


def _label(msg: TaskMessage) -> str:
    """How a task is named in the log: its resource (``namespace/name``) when it has one,
    with the id a Redis-submitted task is known by."""
    if msg.taskset is not None:
        return f"taskset {msg.taskset}[{msg.index}] ({msg.id})"
    return f"{msg.resource} ({msg.id})" if msg.resource else msg.id


class Worker:
    def __init__(
        self,
        broker: Broker,
        settings: WorkerSettings,
        *,
        sink: StatusSink | None = None,
        metrics: WorkerMetrics | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.sink: StatusSink = sink or NullSink()
        self.metrics = metrics
        self.rand = rand
        self.clock = broker.clock
        self.running: dict[str, Running] = {}
        self.buffered: dict[str, Leased] = {}
        """Leased ahead of a free slot (oldest first), started as slots free up."""
        self.run_times = RunTimes()
        self._reports = not isinstance(self.sink, NullSink)
        """Whether the sink wants to hear of anything (only of tasks with a resource)."""
        self.processed = 0
        self.executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="kubetasks-handler"
        )
        self._acks: dict[str, list[tuple[Running, str]]] = defaultdict(list)
        self._ack_ready = asyncio.Event()
        self._wake = asyncio.Event()
        """Set when a slot frees up (a full worker waits for it) and when stopping."""
        self._stopping = asyncio.Event()
        """Set once the worker is told to stop: no more fetching, an idle wait ends."""
        self._held_until: float | None = None
        self._stop_waiter: asyncio.Task[bool] | None = None
        self._queue_names = [q.name for q in settings.queues]
        self._background: set[asyncio.Task[None]] = set()
        """When a queue held back by its cap or rate limit may start a task again."""
        self.promoter = Promoter(broker, settings)
        self.reclaimer = Reclaimer(broker, settings, report=self._report_ended)
        self.heartbeat = Heartbeat(
            broker,
            settings,
            running=self._held,
            on_cancel=functools.partial(self._stop_handler, reason="cancel"),
            on_lost=functools.partial(self._stop_handler, reason="lost"),
        )
        self._item_progress = ItemProgress(broker, settings.worker_id)
        """A TaskSet item's ctx.progress, to its set's progress hash (coalesced per item)."""
        if metrics is not None:  # read when scraped, not set twice per task
            metrics.in_flight.set_function(lambda: len(self.running))

    def _held(self) -> dict[str, str]:
        """Id -> queue of every task this worker holds a lease of: running or buffered."""
        held = {i: r.leased.message.queue for i, r in self.running.items()}
        held.update((i, leased.message.queue) for i, leased in self.buffered.items())
        return held

    def _sinks(self, leased: Leased) -> bool:
        """Whether the sink has anything to do for this task (a Task resource's)."""
        return self._reports and leased.message.resource is not None

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain within the grace period."""
        log.info(
            "worker %s serving %s with concurrency %d; handlers: %s",
            self.worker_id,
            ",".join(f"{q.name}:{q.weight}" for q in self.settings.queues),
            self.settings.concurrency,
            ", ".join(registry.names()),
        )
        background_stop = asyncio.Event()
        background = [
            asyncio.create_task(run_every(c, background_stop), name=c.name)
            for c in (self.heartbeat, self.promoter, self.reclaimer)
        ]
        acker = asyncio.create_task(self._ack_loop(background_stop), name="acker")
        stop_watch = asyncio.create_task(self._watch(stop))
        try:
            await self._fetch_loop()
        finally:
            await self._drain()
            background_stop.set()
            self._ack_ready.set()
            await asyncio.gather(*background, acker, return_exceptions=True)
            stop_watch.cancel()
            await self._item_progress.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            await self.sink.close()
            log.info("worker %s stopped after %d tasks", self.worker_id, self.processed)

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()
        self._wake.set()

    async def _fetch_loop(self) -> None:
        settings = self.settings
        ahead = settings.lease_ahead
        drained = True  # the last fetch took less than it asked for: the queues were empty
        learn = True  # ...and took nothing at all, so the promoter should look again
        own_taken_back = False  # a previous incarnation's leases are returned before any fetch
        while not self._stopping.is_set():
            self._start_buffered()
            free = settings.concurrency - len(self.running)
            room = ahead - len(self.buffered)
            # Lease ahead only while the last lease came back full (a backlog) and tasks are
            # short, and then in batches of at least half the buffer, not one task per
            # freed slot.
            refill = (
                not drained
                and room > 0
                and room * 2 >= ahead
                and self.run_times.short(settings.prefetch_below)
            )
            if free <= 0 and not refill:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if not own_taken_back:
                    await self.reclaimer.take_back_own()
                    own_taken_back = True
                if drained:
                    # Every enqueue leaves a wake-up token, so nothing is missed by sleeping
                    # now instead of asking the queues again.
                    await self._idle(learn=learn)
                    drained = False
                    continue  # stopping or slots taken meanwhile: look again
                # After an idle wait, ask for the free slots only; with a backlog, for the
                # buffer too: batch sizes follow the backlog.
                want = min(max(free, 0) + (room if refill else 0), settings.max_batch)
                leased = await self._fetch(want)
            except BrokerUnavailableError:
                # Redis unreachable or failing over (told once, by outages.REDIS): look
                # again soon, so that work resumes within a moment of its return.
                await asyncio.sleep(RETRY_SECONDS)
                drained = learn = True
                continue
            except Exception as exc:
                log.warning(
                    "fetching work failed (%s: %s); retrying in %ss",
                    type(exc).__name__, exc, RETRY_SECONDS,
                )  # fmt: skip
                await asyncio.sleep(RETRY_SECONDS)
                drained = learn = True
                continue
            drained, learn = len(leased) < want, not leased
            for item in leased:
                if item.ended is not None:
                    await self._report_ended(item)
                elif len(self.running) < settings.concurrency and not self.buffered:
                    self._start(item)
                else:
                    self.buffered[item.message.id] = item

    def _start_buffered(self) -> None:
        """Start buffered tasks while there are free slots (not once stopping)."""
        buffered = self.buffered
        while buffered and len(self.running) < self.settings.concurrency:
            if self._stopping.is_set():
                return
            self._start(buffered.pop(next(iter(buffered))))

    async def _fetch(self, want: int) -> list[Leased]:
        """Lease up to ``want`` tasks from the queues in their order. A queue held back by
        its settings (paused, at its cap, out of rate tokens) is skipped; when it said how
        soon it may start again, the idle wait ends by then."""
        got: list[Leased] = []
        self._held_until = None
        for queue in queue_order(self.settings.queues, self.settings.strict_priority, self.rand):
            dequeued = await self.broker.lease(
                queue, self.worker_id, want - len(got), self.settings.lease_seconds
            )
            got += dequeued.tasks
            if dequeued.retry_after > 0:
                again = self.clock.now() + dequeued.retry_after
                self._held_until = min(again, self._held_until or again)
            if len(got) >= want:
                break
        return got

    async def _idle(self, *, learn: bool) -> None:
        """Block until a task is enqueued, a delayed one is due, or we are told to stop.

        ``learn``: the wake-up that ended the last sleep brought no task, so it may have
        been for a delayed one: ask the promoter before sleeping again. Enqueues leave one
        token per task and a token can only be spent on a task once, so each delayed task
        enqueued leads to at least one such empty wake-up (in this worker or another). A
        wake-up that brought a task costs no promoter call (a Redis round trip per task).
        """
        if learn or self.promoter.stale():
            await self.promoter.tick()  # promote what is due and learn when the next one is
        timeout = self.settings.idle_wait
        if self.promoter.next_due is not None:
            timeout = min(timeout, max(self.promoter.next_due - self.clock.now(), 0.0))
        if timeout <= 0:
            return
        if self._held_until is not None:
            # A queue at its cap or out of tokens has work waiting whose wake-up tokens were
            # spent already: sleep until it may start again instead of waiting for a token.
            held = min(timeout, max(self._held_until - self.clock.now(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), held)
            return
        waiter = asyncio.create_task(self.broker.wait_for_work(self._queue_names, timeout))
        if self._stop_waiter is None:
            # One waiter for the stop across every idle wait, not one task per wait.
            self._stop_waiter = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait(
            {waiter, self._stop_waiter}, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiter
        if waiter in done and waiter.exception() is not None:
            if not isinstance(waiter.exception(), BrokerUnavailableError):
                log.warning("waiting for work failed: %s", waiter.exception())
            await asyncio.sleep(min(timeout, RETRY_SECONDS))

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period; hand the rest back unspent."""
        self._stopping.set()
        await self._hand_back_buffered()
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            log.info(
                "draining %d running tasks (grace %.0fs)", len(tasks), self.settings.grace_period
            )
            _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_period)
            for running in list(self.running.values()):
                if running.task in pending:
                    self._stop_handler(running.leased.message.id, reason="shutdown")
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _hand_back_buffered(self) -> None:
        """Requeue the tasks leased ahead and never started (their attempt is not spent)."""
        while self.buffered:
            task_id, leased = next(iter(self.buffered.items()))
            try:
                await self.broker.requeue(
                    leased.message.queue, self.worker_id, task_id, leased.attempt
                )
            except Exception as exc:  # its lease expires, and the reclaimer takes it back
                log.warning("handing back task %s failed: %s", task_id, exc)
            self.buffered.pop(task_id, None)

    # -- one task --------------------------------------------------------------------------

    def _start(self, leased: Leased) -> None:
        msg = leased.message
        ctx = TaskContext(
            id=msg.id,
            handler=msg.handler,
            queue=msg.queue,
            attempt=leased.attempt,
            max_retries=msg.max_retries,
            resource=msg.resource,
            deadline=msg.deadline,
            logger=log,
            index=msg.index,
            taskset=msg.taskset,
            _read_results=self.broker.taskset_results,
        )
        if self._sinks(leased):
            loop = asyncio.get_running_loop()
            sink = self.sink

            def on_progress(fraction: float, message: str) -> None:
                # From the loop or a sync handler's thread: the sink runs on the loop.
                loop.call_soon_threadsafe(
                    sink.progress, leased, fraction, message, self.clock.now()
                )

            ctx._on_progress = on_progress
        elif msg.taskset is not None:
            # A set item has no resource: its progress goes to Redis, where the operator
            # folds it into the set's status.progress. One closure per item, no other work
            # until the handler reports.
            loop = asyncio.get_running_loop()
            items = self._item_progress

            def on_item_progress(fraction: float, message: str) -> None:
                loop.call_soon_threadsafe(items.report, leased, fraction)

            ctx._on_progress = on_item_progress
        running = Running(leased, ctx, started=time.monotonic())
        self.running[msg.id] = running
        if log.isEnabledFor(logging.INFO):
            _task_line("_start", "task %s %s attempt %d started",
                       _label(msg), msg.handler, leased.attempt)  # fmt: skip
        running.task = asyncio.create_task(self._process(running))

    async def _report_ended(self, leased: Leased) -> None:
        """A task Redis ended without running it: only the sink needs to hear of it."""
        assert leased.ended is not None
        if self._sinks(leased):
            await self.sink.finished(leased, outcomes.ended_outcome(leased.ended), self.clock.now())

    def _stop_handler(self, task_id: str, *, reason: str) -> None:
        leased = self.buffered.pop(task_id, None)
        if leased is not None:
            # Not started yet: a lost lease is simply dropped; a cancelled task ends
            # cancelled without running.
            if reason == "cancel":
                self._ended_unstarted(leased)
            return
        running = self.running.get(task_id)
        if running is None or running.stop_reason is not None:
            return
        running.stop_reason = reason
        running.ctx.cancel()
        if running.task is not None:
            running.task.cancel()

    def _ended_unstarted(self, leased: Leased) -> None:
        msg = leased.message
        running = Running(leased, TaskContext(
            id=msg.id, handler=msg.handler, queue=msg.queue, attempt=leased.attempt,
            max_retries=msg.max_retries, resource=msg.resource, deadline=msg.deadline,
            logger=log, index=msg.index, taskset=msg.taskset,
        ), stop_reason="cancel", started=time.monotonic())  # fmt: skip
        self._background.add(task := asyncio.create_task(
            self._report(running, None, TaskCancelledError(f"task {msg.id} was cancelled"))
        ))  # fmt: skip
        task.add_done_callback(self._background.discard)

    async def _process(self, running: Running) -> None:
        leased = running.leased
        msg = leased.message
        result: str | None = None
        exc: BaseException | None = None
        try:
            if self._sinks(leased):
                await self.sink.started(leased, self.worker_id, self.clock.now())
            handler = registry.get(msg.handler)
            extra = handler.bind(msg.args, msg.kwargs, running.ctx)
            kwargs = {**msg.kwargs, **extra} if extra else msg.kwargs
            if middleware.any_registered():
                async with middleware.around(running.ctx):
                    value = await self._call(handler, msg.args, kwargs, msg.timeout)
            else:
                value = await self._call(handler, msg.args, kwargs, msg.timeout)
            try:
                result = "null" if value is None else dumps(value)
            except (TypeError, ValueError) as err:
                exc = outcomes.ResultNotJsonError(
                    f"handler {msg.handler!r} returned a value of type "
                    f"{type(value).__name__}, which is not JSON: {err}"
                )
        except asyncio.CancelledError as err:
            exc = err
        except Exception as err:
            exc = err
        # The handler's time only: the report's wait for its group-committed ack is Redis
        # latency, which leasing ahead hides rather than suffers from.
        ran = time.monotonic() - running.started
        try:
            await self._report(running, result, exc)
        finally:
            self.running.pop(msg.id, None)
            self.run_times.add(ran)
            # The freed slot takes the next buffered task at once; the fetch loop hears
            # of it to lease more.
            self._start_buffered()
            self._wake.set()

    async def _call(
        self,
        handler: registry.Handler,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        if handler.is_async:
            call = handler.fn(*args, **kwargs)
        else:
            # Sync handlers run in threads. A thread cannot be killed: on timeout the attempt
            # fails at once and the thread is left to finish (documented in the README).
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            call = loop.run_in_executor(
                self.executor, functools.partial(ctx.run, handler.fn, *args, **kwargs)
            )
        if timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            raise TaskTimeoutError(f"attempt ran longer than its timeout of {timeout:g}s") from None

    async def _report(
        self, running: Running, result: str | None, exc: BaseException | None
    ) -> None:
        leased = running.leased
        msg = leased.message
        reason = running.stop_reason
        if reason == "lost":
            log.warning("task %s: lease lost, another worker may run it; not reporting", msg.id)
            return
        if reason == "shutdown":
            await self.broker.requeue(msg.queue, self.worker_id, msg.id, leased.attempt)
            log.info("task %s handed back unspent (shutting down)", msg.id)
            return
        if reason == "cancel" and isinstance(exc, asyncio.CancelledError):
            exc = TaskCancelledError(f"task {msg.id} was cancelled")
        decision = outcomes.decide(
            attempt=leased.attempt,
            max_retries=msg.max_retries,
            backoff=msg.backoff,
            deadline=msg.deadline,
            now=self.clock.now(),
            result=result,
            exc=exc,
            rand=self.rand,
        )
        took = time.monotonic() - running.started
        if self.metrics is not None:
            self.metrics.observe(msg.queue, msg.handler, decision.kind, took)
        if log.isEnabledFor(logging.INFO):
            _task_line(
                "_report",
                "task %s %s attempt %d %s in %.2fs%s",
                _label(msg),
                msg.handler,
                leased.attempt,
                decision.kind,
                took,
                f": {decision.error.get('type')}: {decision.error.get('message')}"
                if decision.error
                else "",
            )
        if decision.kind == "succeeded":
            assert decision.result is not None
            self._acks[msg.queue].append((running, decision.result))
            self._ack_ready.set()
            return
        error = dumps(decision.error)
        if decision.kind == "retry":
            assert decision.retry_at is not None
            ok = await self.broker.retry(
                msg.queue, self.worker_id, msg.id, leased.attempt, decision.retry_at, error
            )
        else:
            ok = await self.broker.fail(
                msg.queue, self.worker_id, msg.id, leased.attempt, decision.kind, error
            )
        self.processed += 1
        if ok and self._sinks(leased):
            await self.sink.finished(leased, decision, self.clock.now())

    async def _ack_loop(self, stop: asyncio.Event) -> None:
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            batches, self._acks = self._acks, defaultdict(list)
            for queue, items in batches.items():
                try:
                    await self._flush(queue, items)
                except Exception as exc:
                    if not isinstance(exc, BrokerUnavailableError):
                        log.exception(
                            "acking %d tasks of queue %s failed; retrying", len(items), queue
                        )
                    self._acks[queue].extend(items)
                    await asyncio.sleep(RETRY_SECONDS)
                    self._ack_ready.set()
            if stop.is_set() and not self._acks:
                return

    async def _flush(self, queue: str, items: list[tuple[Running, str]]) -> None:
        stale = set(
            await self.broker.ack(
                queue,
                self.worker_id,
                [(r.leased.message.id, r.leased.attempt, result) for r, result in items],
            )
        )
        self.processed += len(items)
        now = self.clock.now()
        for running, result in items:
            if running.leased.message.id in stale:
                log.warning(
                    "task %s finished after its lease was lost; result dropped", running.ctx.id
                )
            elif self._sinks(running.leased):
                await self.sink.finished(running.leased, outcomes.Outcome("succeeded", result), now)
