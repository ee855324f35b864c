"""The ``MAILQUEUE`` settings: read, checked, and turned into engine objects.

Every key is optional but ``STORE``; an unknown key, a wrong type or a bad
value is a :class:`~mailqueue_core.errors.ConfigurationError` naming the key.
Nothing here needs a Django project: the standalone command builds a
:class:`Config` from its own arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mailqueue_core.errors import ConfigurationError, reject_unknown_keys
from mailqueue_core.locations import redact_value
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.ratelimit import RateLimit

__all__ = ["DEFAULTS", "Config"]

DEFAULTS: dict[str, Any] = {
    "STORE": None,
    "TRANSPORT": "smtp",
    "TRANSPORTS": {},
    "NAMESPACE": "default",
    "MAX_AGE": 86400,
    "RETRY": {"FIRST": 60, "FACTOR": 2, "MAX": 3600, "JITTER": 0.1},
    "BATCH_SIZE": 100,
    "LEASE": 300,
    "FALLBACK_STORE": None,
    "MAX_MESSAGE_SIZE": 10_485_760,
    "ON_COMMIT": False,
    "RATE_LIMIT": None,
}
_RETRY_KEYS = {"FIRST": "first", "FACTOR": "factor", "MAX": "max", "JITTER": "jitter"}


def _number(settings: Mapping[str, Any], key: str, *, integer: bool = False) -> Any:
    value = settings[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigurationError(f"MAILQUEUE['{key}'] must be {kind}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    store: Any
    transport: Any = "smtp"
    transports: dict[str, Any] = dataclasses.field(default_factory=dict)
    namespace: str = "default"
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    batch_size: int = 100
    lease: float = 300.0
    fallback_store: Any = None
    max_message_size: int = 10_485_760
    on_commit: str | None = None
    """The database alias whose transaction commit enqueues the mail, or None."""
    rate_limit: RateLimit | None = None

    def __repr__(self) -> str:
        # Shown in tracebacks' local variables (Django's error pages and ADMINS mails):
        # the store and transport URLs may hold passwords, their OPTIONS too.
        fields = ", ".join(
            f"{f.name}={redact_value(getattr(self, f.name))!r}" for f in dataclasses.fields(self)
        )
        return f"Config({fields})"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> Config:
        if settings is None:
            raise ConfigurationError(
                "MAILQUEUE is not set: add MAILQUEUE = {'STORE': 'sqlite:////var/spool/"
                "mailqueue.db'} (or another store URL) to your settings"
            )
        if not isinstance(settings, Mapping):
            raise ConfigurationError(f"MAILQUEUE must be a dict, got {type(settings).__name__}")
        reject_unknown_keys("MAILQUEUE", settings, DEFAULTS)
        merged = {**DEFAULTS, **settings}
        if not merged["STORE"]:
            raise ConfigurationError(
                "MAILQUEUE['STORE'] is required, e.g. 'sqlite:////var/spool/mailqueue.db'"
            )
        namespace = merged["NAMESPACE"]
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(
                f"MAILQUEUE['NAMESPACE'] must be a non-empty string, got {namespace!r}"
            )
        retry = merged["RETRY"]
        if not isinstance(retry, Mapping):
            raise ConfigurationError(f"MAILQUEUE['RETRY'] must be a dict, got {retry!r}")
        reject_unknown_keys("MAILQUEUE['RETRY']", retry, _RETRY_KEYS)
        retry = {**DEFAULTS["RETRY"], **retry}
        max_age = _number(merged, "MAX_AGE")
        try:
            policy = RetryPolicy(**{_RETRY_KEYS[k]: v for k, v in retry.items()}, max_age=max_age)
        except ConfigurationError as exc:
            raise ConfigurationError(f"MAILQUEUE['RETRY']: {exc}") from None
        transport = merged["TRANSPORT"]
        if not transport:
            raise ConfigurationError("MAILQUEUE['TRANSPORT'] must name a transport")
        on_commit = merged["ON_COMMIT"]
        if on_commit is True:
            on_commit = "default"
        elif on_commit is False or on_commit is None:
            on_commit = None
        elif not isinstance(on_commit, str):
            raise ConfigurationError(
                "MAILQUEUE['ON_COMMIT'] must be True, False or a database alias, "
                f"got {on_commit!r}"
            )
        routes = merged["TRANSPORTS"]
        if not isinstance(routes, Mapping) or not all(
            isinstance(name, str) and name and spec for name, spec in routes.items()
        ):
            raise ConfigurationError(
                "MAILQUEUE['TRANSPORTS'] must map route names to transports, e.g. "
                "{'bulk': 'smtp://bulk-relay:587'}"
            )
        return cls(
            store=merged["STORE"],
            transport=transport,
            transports=dict(routes),
            namespace=namespace,
            policy=policy,
            batch_size=_number(merged, "BATCH_SIZE", integer=True),
            lease=float(_number(merged, "LEASE")),
            fallback_store=merged["FALLBACK_STORE"],
            max_message_size=_number(merged, "MAX_MESSAGE_SIZE", integer=True),
            on_commit=on_commit,
            rate_limit=RateLimit.from_settings(merged["RATE_LIMIT"]),
        )
