"""Outages of a dependency as the log tells them: one warning once calls have failed for a
second, one when a call succeeds again (with how long it lasted), nothing in between.

An outage of Redis or of the API server is something kubetasks is built to ride out: every
loop retries on its next tick. A traceback per failed tick would bury the one line that
matters (when it started, when it ended) under hundreds that say the same thing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds calls must keep failing before an outage is told: a restarted server fails each
#: pooled connection once, and such blips are not outages.
GRACE_SECONDS = 1.0


class Outage:
    def __init__(
        self, what: str, logger: logging.Logger, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.log = logger
        self.clock = clock
        self.since: float | None = None
        """When the current run of failures began (None: the last call succeeded)."""
        self.told = False
        """The current outage was logged (it outlasted ``GRACE_SECONDS``)."""
        self.failures = 0
        """Calls failed in the current outage."""

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A call failed because the dependency is unreachable."""
        self.failures += 1
        now = self.clock()
        if self.since is None:
            self.since = now
        if not self.told and now - self.since >= GRACE_SECONDS:
            self.told = True
            self.log.warning("%s is unreachable (%s); retrying quietly", self.what, exc)
        else:
            self.log.debug("%s unreachable: %s", self.what, exc)

    def succeeded(self) -> None:
        """A call succeeded: the outage, if any, is over."""
        if self.since is None:
            return
        lasted, failures, told = self.clock() - self.since, self.failures, self.told
        self.since, self.failures, self.told = None, 0, False
        if told:
            self.log.warning(
                "%s is reachable again after %.1f s (%d calls failed meanwhile)",
                self.what,
                lasted,
                failures,
            )


#: Redis, as this process sees it (every Broker call reports here).
REDIS = Outage("Redis", logging.getLogger("kubetasks.redis"))
