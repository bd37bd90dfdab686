"""A token bucket for writes that are worth making but not at any price (Events, the
Queued status of a Task in a big burst): pure, with the clock injected."""

from __future__ import annotations

from kubetasks.clock import Clock


class Budget:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.at = clock.now()

    def take(self, keep: float = 0.0) -> bool:
        """Spend one token if more than ``keep`` would remain."""
        now = self.clock.now()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens - 1 < keep:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next token (0 when one is there now)."""
        tokens = min(self.burst, self.tokens + (self.clock.now() - self.at) * self.rate)
        return max(0.0, (1 - tokens) / self.rate)
