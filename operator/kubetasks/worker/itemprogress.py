"""A TaskSet item's ``ctx.progress`` goes to Redis, coalesced: its set's aggregate.

A set item has no resource to write progress onto; the operator reads the fractions its
running items reported from the set's progress hash and folds them into the set's
``status.progress``. Here each report becomes at most one ``item_progress`` script call
per item per :data:`INTERVAL`: the first at once, then the latest value once the interval
passed, so a handler reporting in a tight loop costs Redis little and the operator, which
writes the set's status twice a second at most, nothing more. The ack path is untouched: a
report still on its way when the item ends is refused by the script (the lease is gone).
"""

from __future__ import annotations

import asyncio
import logging

from kubetasks.queue import Broker, Leased

log = logging.getLogger("kubetasks.worker")

#: Seconds between two progress calls of one item: at most one Redis write per item per
#: second, however often its handler reports.
INTERVAL = 1.0


class ItemProgress:
    """``report(leased, fraction)`` from the event loop; sends run as tasks of their own."""

    def __init__(self, broker: Broker, worker_id: str, interval: float = INTERVAL) -> None:
        self.broker, self.worker_id, self.interval = broker, worker_id, interval
        self._latest: dict[tuple[str, int], float] = {}
        self._sending: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, leased: Leased, fraction: float) -> None:
        key = (leased.message.id, leased.attempt)
        self._latest[key] = fraction
        if key not in self._sending:
            self._sending.add(key)
            task = asyncio.get_running_loop().create_task(self._send(leased, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, leased: Leased, key: tuple[str, int]) -> None:
        try:
            while key in self._latest:
                fraction = self._latest.pop(key)
                recorded = await self.broker.item_progress(
                    leased.message.queue, self.worker_id, key[0], key[1], fraction
                )
                if not recorded:
                    self._latest.pop(key, None)
                    return  # the attempt ended (or is no longer ours): nothing more to say
                await asyncio.sleep(self.interval)
        except Exception as exc:  # progress is advisory: a failed report loses nothing else
            log.info("progress of task %s not recorded: %s", key[0], exc)
        finally:
            self._sending.discard(key)

    async def close(self) -> None:
        """Stop sending (the worker stops: its items ended or went back to the queue)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._latest.clear()
