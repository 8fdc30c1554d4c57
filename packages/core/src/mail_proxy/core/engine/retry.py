"""The retry policy: which failures are retried, and when.

Temporary failures (connection errors, timeouts, 4xx replies) are retried with exponential
backoff and jitter following ``retry_delays`` (default 1 min, 5 min, 15 min, 1 h, 2 h; the last
delay repeats); permanent ones (5xx, authentication, certificates) fail at once. A message
fails for good when a temporary failure would need retry number ``max_retries + 1``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    delays: tuple[float, ...]
    max_retries: int
    jitter: float = 0.1

    def should_retry(self, attempts_made: int) -> bool:
        """True when a message that failed temporarily ``attempts_made`` times may retry."""
        return attempts_made <= self.max_retries

    def delay(self, attempts_made: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt after ``attempts_made`` failed ones."""
        if not self.delays:
            return 0.0
        base = self.delays[min(max(attempts_made, 1), len(self.delays)) - 1]
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
