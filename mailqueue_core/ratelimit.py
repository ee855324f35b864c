"""Rate limits shared by every flusher: token buckets and connection slots in the store.

``MAILQUEUE["RATE_LIMIT"]``::

    {
        "MESSAGES": "50/s",                # all flushers together ("N/s", "N/m", "N/h")
        "BURST": 10,                       # bucket size (default: one second's worth)
        "DOMAINS": {"gmail.com": "20/m"},  # per recipient domain, on top of MESSAGES
        "CONNECTIONS": 4,                  # transport connections open at once
    }

A store that declares the ``"rate_limit"`` capability keeps the buckets and
slots itself (atomically, for every process and machine that uses it); for any
other store each flusher process enforces the limits on its own, and says so
with a WARNING at startup. A flusher waits for a token before each send (and
for a slot before each batch's connection) but never past the lease of the
message in hand: it gives the rest of the batch back instead.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mailqueue_core.errors import ConfigurationError, reject_unknown_keys
from mailqueue_core.message import QueuedMessage

__all__ = ["Limits", "LocalLimits", "RateLimit", "RateLimiter", "parse_rate"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: Any, setting: str) -> float:
    """Messages per second from ``"50/s"``, ``"600/m"``, ``"1000/h"`` or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*", value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) / _UNITS[match.group(2)]
    raise ConfigurationError(
        f"{setting} must be a rate such as '50/s', '600/m' or '1000/h', got {value!r}"
    )


@dataclasses.dataclass(frozen=True)
class Bucket:
    name: str
    rate: float
    burst: float


@dataclasses.dataclass(frozen=True)
class RateLimit:
    messages: Bucket | None = None
    domains: Mapping[str, Bucket] = dataclasses.field(default_factory=dict)
    connections: int | None = None

    @classmethod
    def from_settings(cls, value: Any) -> RateLimit | None:
        if value is None:
            return None
        name = "MAILQUEUE['RATE_LIMIT']"
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{name} must be a dict, got {value!r}")
        reject_unknown_keys(name, value, ("MESSAGES", "BURST", "DOMAINS", "CONNECTIONS"))
        burst = value.get("BURST")
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1
        ):
            raise ConfigurationError(f"{name}['BURST'] must be a number >= 1, got {burst!r}")

        def bucket(key: str, rate_value: Any, setting: str) -> Bucket:
            rate = parse_rate(rate_value, setting)
            return Bucket(key, rate, float(burst) if burst is not None else max(1.0, rate))

        messages = None
        if value.get("MESSAGES") is not None:
            messages = bucket("messages", value["MESSAGES"], f"{name}['MESSAGES']")
        domains_value = value.get("DOMAINS") or {}
        if not isinstance(domains_value, Mapping):
            raise ConfigurationError(f"{name}['DOMAINS'] must map domains to rates")
        domains = {
            str(domain).lower(): bucket(
                f"domain:{str(domain).lower()}", rate, f"{name}['DOMAINS'][{domain!r}]"
            )
            for domain, rate in domains_value.items()
        }
        connections = value.get("CONNECTIONS")
        if connections is not None and (
            isinstance(connections, bool) or not isinstance(connections, int) or connections < 1
        ):
            raise ConfigurationError(
                f"{name}['CONNECTIONS'] must be a positive integer, got {connections!r}"
            )
        return cls(messages=messages, domains=domains, connections=connections)


class Limits(Protocol):
    """Where buckets and slots live: a store with the "rate_limit" capability, or a process."""

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float: ...

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None: ...

    def release_slot(self, name: str, token: str) -> None: ...


class LocalLimits:
    """Buckets and slots in this process only (for stores that cannot share them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float:
        with self._lock:
            tokens, then = self._buckets.get(bucket, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - then) * rate)
            if tokens >= 1:
                self._buckets[bucket] = (tokens - 1, now)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1 - tokens) / rate

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None:
        with self._lock:
            slots = {t: e for t, e in self._slots.get(name, {}).items() if e > now}
            self._slots[name] = slots
            if len(slots) >= limit:
                return None
            token = uuid.uuid4().hex
            slots[token] = now + lease
            return token

    def release_slot(self, name: str, token: str) -> None:
        with self._lock:
            self._slots.get(name, {}).pop(token, None)


class RateLimiter:
    """Waits for tokens and slots on behalf of one flusher."""

    #: How often to look again for a free connection slot.
    slot_poll = 0.25

    def __init__(self, limit: RateLimit, limits: Limits, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.limits = limits
        self.clock = clock

    def _buckets(self, message: QueuedMessage) -> list[Bucket]:
        buckets = [self.limit.messages] if self.limit.messages else []
        domains = {r.rpartition("@")[2].rstrip(">").lower() for r in message.recipients}
        buckets += [self.limit.domains[d] for d in sorted(domains) if d in self.limit.domains]
        return buckets

    def wait_to_send(self, message: QueuedMessage, stop: threading.Event, deadline: float) -> bool:
        """Take a token from each bucket the message falls in; False if it cannot before
        ``deadline`` (or ``stop`` is set): then nothing is sent."""
        for bucket in self._buckets(message):
            while True:
                wait = self.limits.take_token(bucket.name, bucket.rate, bucket.burst, self.clock())
                if wait <= 0:
                    break
                if self.clock() + wait >= deadline or stop.wait(wait):
                    return False
        return True

    def acquire_connection(
        self, stop: threading.Event, deadline: float, lease: float
    ) -> str | None:
        """A connection slot's token, or None when none is free before ``deadline``."""
        limit = self.limit.connections
        assert limit is not None
        while True:
            token = self.limits.acquire_slot("connections", limit, lease, self.clock())
            if token is not None:
                return token
            if self.clock() + self.slot_poll >= deadline or stop.wait(self.slot_poll):
                return None

    def release_connection(self, token: str) -> None:
        self.limits.release_slot("connections", token)
