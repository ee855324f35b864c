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
from mailqueue_core.sentlog import ALLOWED as SENT_LOG_ALLOWED
from mailqueue_core.sentlog import SentLog
from mailqueue_core.staging import ALLOWED as STAGING_ALLOWED
from mailqueue_core.staging import Staging

__all__ = ["ALLOWED", "DEFAULTS", "Config", "TaskSetting"]

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
    "STAGING": None,
    "SENT_LOG": None,
    "TASK": False,
}

#: What each key takes, said by the system check beside the error (``mailqueue.E001``).
ALLOWED: dict[str, str] = {
    "STORE": "a store's name, its URL, or {'NAME': name or URL, 'OPTIONS': {...}}, "
    "e.g. 'sqlite:////var/spool/mailqueue/queue.db'",
    "TRANSPORT": "a transport's name, its URL, {'NAME': ..., 'OPTIONS': {...}}, or a list "
    "of those (failover), e.g. 'smtp' or 'smtp://relay:587?starttls=true'",
    "TRANSPORTS": "a dict of route names to transports, e.g. {'bulk': 'smtp://bulk-relay:25'}",
    "NAMESPACE": "a non-empty string",
    "MAX_AGE": "a positive number of seconds",
    "RETRY": "a dict with any of FIRST (seconds > 0), FACTOR (>= 1), MAX (seconds > 0) "
    "and JITTER (a fraction, 0 <= JITTER < 1)",
    "BATCH_SIZE": "a positive integer",
    "LEASE": "a positive number of seconds",
    "FALLBACK_STORE": "None, or a store named as for STORE (a local sqlite file)",
    "MAX_MESSAGE_SIZE": "a positive integer (bytes)",
    "ON_COMMIT": "False, True, or a database alias (a string)",
    "RATE_LIMIT": "None, or a dict with any of MESSAGES ('50/s', '600/m', '1000/h'), "
    "BURST (>= 1), DOMAINS ({domain: rate}) and CONNECTIONS (a positive integer)",
    "STAGING": STAGING_ALLOWED,
    "SENT_LOG": SENT_LOG_ALLOWED,
    "TASK": "False, True, or a dict with any of BACKEND (an alias of TASKS), QUEUE_NAME (a "
    "queue of that backend) and PRIORITY (an integer from -100 to 100)",
}
_RETRY_KEYS = {"FIRST": "first", "FACTOR": "factor", "MAX": "max", "JITTER": "jitter"}
_TASK_KEYS = ("BACKEND", "QUEUE_NAME", "PRIORITY")


def _number(settings: Mapping[str, Any], key: str, *, integer: bool = False) -> Any:
    value = settings[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ConfigurationError(
            f"MAILQUEUE['{key}'] must be {ALLOWED[key]}, got {value!r}", key=key
        )
    return value


def _policy(retry: Any, max_age: float) -> RetryPolicy:
    if not isinstance(retry, Mapping):
        raise ConfigurationError(
            f"MAILQUEUE['RETRY'] must be {ALLOWED['RETRY']}, got {retry!r}", key="RETRY"
        )
    reject_unknown_keys("MAILQUEUE['RETRY']", retry, _RETRY_KEYS, key="RETRY")
    fields = {_RETRY_KEYS[k]: v for k, v in {**DEFAULTS["RETRY"], **retry}.items()}
    for name, field in _RETRY_KEYS.items():
        try:
            RetryPolicy(**{field: fields[field]})  # one at a time, to name the key at fault
        except ConfigurationError as exc:
            raise ConfigurationError(f"MAILQUEUE['RETRY']['{name}']: {exc}", key="RETRY") from None
    return RetryPolicy(**fields, max_age=max_age)


def _on_commit(value: Any) -> str | None:
    if value is True:
        return "default"
    if value is False or value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"MAILQUEUE['ON_COMMIT'] must be {ALLOWED['ON_COMMIT']}, got {value!r}",
            key="ON_COMMIT",
        )
    return value


@dataclasses.dataclass(frozen=True)
class TaskSetting:
    """``TASK``: the flush task (:mod:`mailqueue_core.tasks`) enqueued after mail is queued."""

    backend: str = "default"
    """The alias in ``TASKS`` of the tasks backend."""
    queue_name: str = "default"
    priority: int | None = None
    """None: the task's default (a backend without priorities refuses any other)."""

    def using(self) -> dict[str, Any]:
        """The keyword arguments of ``Task.using()`` that enqueue the flush this way."""
        chosen = {"backend": self.backend, "queue_name": self.queue_name}
        return chosen if self.priority is None else {**chosen, "priority": self.priority}

    @classmethod
    def from_settings(cls, value: Any) -> TaskSetting | None:
        if value is False or value is None:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"MAILQUEUE['TASK'] must be {ALLOWED['TASK']}, got {value!r}", key="TASK"
            )
        reject_unknown_keys("MAILQUEUE['TASK']", value, _TASK_KEYS, key="TASK")
        backend, queue_name = (_task_name(value, key) for key in ("BACKEND", "QUEUE_NAME"))
        priority = value.get("PRIORITY")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 100
        ):
            raise ConfigurationError(
                "MAILQUEUE['TASK']['PRIORITY'] must be an integer from -100 to 100, got "
                f"{priority!r}",
                key="TASK",
            )
        return cls(backend, queue_name, priority)


def _task_name(value: Mapping[str, Any], key: str) -> str:
    name = value.get(key, "default")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"MAILQUEUE['TASK']['{key}'] must be a non-empty string, got {name!r}", key="TASK"
        )
    return name


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
    staging: Staging | None = None
    """``STAGING``: whom mail may reach (see :mod:`mailqueue_core.staging`)."""
    sent_log: SentLog | None = None
    """``SENT_LOG``: how long delivered mail is recorded (see :mod:`mailqueue_core.sentlog`)."""
    task: TaskSetting | None = None
    """``TASK``: the flush task enqueued after mail is queued, or None (off)."""

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
                "mailqueue/queue.db'} (or another store URL) to your settings",
                key="STORE",
            )
        if not isinstance(settings, Mapping):
            raise ConfigurationError(f"MAILQUEUE must be a dict, got {type(settings).__name__}")
        reject_unknown_keys("MAILQUEUE", settings, DEFAULTS)
        merged = {**DEFAULTS, **settings}
        if not merged["STORE"]:
            raise ConfigurationError(
                f"MAILQUEUE['STORE'] is required: {ALLOWED['STORE']}", key="STORE"
            )
        namespace = merged["NAMESPACE"]
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(
                f"MAILQUEUE['NAMESPACE'] must be a non-empty string, got {namespace!r}",
                key="NAMESPACE",
            )
        policy = _policy(merged["RETRY"], _number(merged, "MAX_AGE"))
        transport = merged["TRANSPORT"]
        if not transport:
            raise ConfigurationError(
                f"MAILQUEUE['TRANSPORT'] must name a transport: {ALLOWED['TRANSPORT']}",
                key="TRANSPORT",
            )
        routes = merged["TRANSPORTS"]
        if not isinstance(routes, Mapping) or not all(
            isinstance(name, str) and name and spec for name, spec in routes.items()
        ):
            raise ConfigurationError(
                f"MAILQUEUE['TRANSPORTS'] must be {ALLOWED['TRANSPORTS']}", key="TRANSPORTS"
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
            on_commit=_on_commit(merged["ON_COMMIT"]),
            rate_limit=_rate_limit(merged["RATE_LIMIT"]),
            staging=Staging.from_settings(merged["STAGING"]),
            sent_log=SentLog.from_settings(merged["SENT_LOG"]),
            task=TaskSetting.from_settings(merged["TASK"]),
        )


def _rate_limit(value: Any) -> RateLimit | None:
    try:
        return RateLimit.from_settings(value)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc), key="RATE_LIMIT") from None
