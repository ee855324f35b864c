"""The retry policy: when to try again, and when to give up.

Exponential backoff with jitter: the n-th retry waits ``FIRST * FACTOR**(n-1)``
seconds, capped at ``MAX``, spread by +/- ``JITTER`` (a fraction) so that a
backlog does not come back all at once. A message is given up for age only
after an attempt fails once it is ``max_age`` old, never before its last try:
the last retry is scheduled no later than ``created + max_age``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from mailqueue_core.errors import ConfigurationError

__all__ = ["RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    first: float = 60.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: float = 0.1
    max_age: float = 86400.0
    random: Callable[[], float] = dataclasses.field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        for name in ("first", "max", "max_age"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"retry {name} must be a positive number, got {value!r}")
        if not isinstance(self.factor, (int, float)) or self.factor < 1:
            raise ConfigurationError(f"retry factor must be a number >= 1, got {self.factor!r}")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter < 1:
            raise ConfigurationError(
                f"retry jitter must be a fraction in [0, 1), got {self.jitter!r}"
            )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 = the first)."""
        base = min(self.max, self.first * self.factor ** max(0, attempts - 1))
        spread = base * self.jitter
        return base - spread + 2 * spread * self.random()

    def expired(self, created: float, now: float) -> bool:
        """True once the message is too old for another try."""
        return now - created >= self.max_age

    def next_due(self, created: float, attempts: int, now: float) -> float:
        """When to retry after the ``attempts``-th failure at ``now``."""
        return min(now + self.delay(attempts), created + self.max_age)
