"""Outages of a dependency as the log tells them: one warning once calls have failed for a
second, one when a call succeeds again (with how long it lasted), nothing in between. A
blip shorter than that is one INFO line when it ends (none within ``BLIP_QUIET_SECONDS`` of the
last one told or of an outage's end: a restarted server fails each pooled connection
once, in several blips), so that a call
retried after it is never a mystery in the log.

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
#: Seconds after a blip or an outage ended in which further blips are not told at INFO
#: (they are the same event).
BLIP_QUIET_SECONDS = 10.0


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
        self.first: str | None = None
        """The first failure of the current run, told if it ends as a blip."""
        self.ended_at: float | None = None
        """When the last blip or outage told at INFO or above ended."""

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A call failed because the dependency is unreachable."""
        self.failures += 1
        now = self.clock()
        if self.since is None:
            self.since, self.first = now, str(exc)
        if not self.told and now - self.since >= GRACE_SECONDS:
            self.told = True
            self.log.warning("%s is unreachable (%s); retrying quietly", self.what, exc)
        else:
            self.log.debug("%s unreachable: %s", self.what, exc)

    def succeeded(self) -> None:
        """A call succeeded: the outage, if any, is over."""
        if self.since is None:
            return
        now = self.clock()
        lasted, failures, told = now - self.since, self.failures, self.told
        first, self.since, self.failures, self.told, self.first = self.first, None, 0, False, None
        quiet = self.ended_at is not None and now - self.ended_at < BLIP_QUIET_SECONDS
        if told or not quiet:
            self.ended_at = now
        if not told:
            self.log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s calls failed for %.1f s and succeed again (%d failed; the first: %s)",
                self.what,
                lasted,
                failures,
                first,
            )
        else:
            self.log.warning(
                "%s is reachable again after %.1f s (%d calls failed meanwhile)",
                self.what,
                lasted,
                failures,
            )


#: Redis, as this process sees it (every Broker call reports here).
REDIS = Outage("Redis", logging.getLogger("kubetasks.redis"))
#: The Kubernetes API server, as the operator sees it (its API client reports here, and
#: :class:`KopfOutageFilter` turns kopf's own retry lines into reports).
API = Outage("The Kubernetes API server", logging.getLogger("kubetasks.kubeapi"))


def any_ongoing() -> bool:
    """Whether a dependency is failing right now: a failed loop tick is then most likely
    that outage, told already."""
    return REDIS.ongoing or API.ongoing


#: What kopf's retry and watch lines say when the API server is unreachable or overloaded.
_KOPF_OUTAGE_SIGNS = (
    "Request attempt",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "TooManyRequests",
    "Cannot connect to host",
    "Connection reset",
    "Service Unavailable",
)


class KopfOutageFilter(logging.Filter):
    """Drops kopf's lines about an unreachable API server (it retries each request and
    watch itself and logs every attempt), reporting them to :data:`API` instead, which
    logs the outage once. Attached to the operator's log handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kopf") or record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        if not any(sign in text for sign in _KOPF_OUTAGE_SIGNS):
            return True
        API.failed(ConnectionError(text[:200]))
        return False
