"""The queueing email backend: ``EMAIL_BACKEND = "mailqueue_core.backend.EmailBackend"``.

``send_messages()`` stores each message and returns at once; it never talks
to the SMTP server, so a mail server that is down cannot fail the request.
It raises what Django's SMTP backend raises for a malformed message (header
injection, a bad address), and :class:`~mailqueue_core.errors.StoreUnavailable`
when neither the store nor the fallback store can take the mail (unless
``fail_silently``).

With Django 6.1's ``MAILERS`` the backend's ``OPTIONS`` are the ``MAILQUEUE``
keys in lower case (``store``, ``transport``, ``namespace``...); they override
``settings.MAILQUEUE``. Unknown options are rejected as Django rejects them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailqueue_core import codec, convert
from mailqueue_core.config import DEFAULTS, Config, TaskSetting
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.errors import ConfigurationError, MessageTooLarge, StoreUnavailable
from mailqueue_core.locations import redact
from mailqueue_core.signals import message_queued
from mailqueue_core.store import Record
from mailqueue_core.text import get_logger

__all__ = ["EmailBackend"]

logger = get_logger("mailqueue.backend")

_OPTION_KEYS = {key.lower(): key for key in DEFAULTS}


class EmailBackend(BaseEmailBackend):
    """Queues messages in the configured store; a flusher delivers them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        overrides = {_OPTION_KEYS[k]: kwargs.pop(k) for k in list(kwargs) if k in _OPTION_KEYS}
        # fail_silently is ours to honour; Django 6.1 deprecates it in its base
        # class, so it is not passed on.
        fail_silently = kwargs.pop("fail_silently", args[0] if args else False)
        super().__init__(**kwargs)
        self.fail_silently = bool(fail_silently)
        self._overrides = overrides
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = get_config(self._overrides)
        return self._config

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        config = self.config
        now = time.time()
        queued = []
        for message in email_messages:
            if not message.recipients():
                continue
            item = convert.capture(message)
            if item.transport is not None and item.transport not in config.transports:
                raise ConfigurationError(
                    f"the message asks for transport {item.transport!r}, which is not in "
                    f"MAILQUEUE['TRANSPORTS'] (known: {', '.join(sorted(config.transports))})"
                )
            # Held until its send time; MAX_AGE counts from then.
            item.created = item.due = now if item.send_at is None else max(now, item.send_at)
            queued.append(item)
        if not queued:
            return 0
        records = [codec.to_record(item) for item in queued]
        for record, item in zip(records, queued, strict=True):
            if record.size > config.max_message_size:
                raise MessageTooLarge(
                    f"message to {', '.join(item.recipients)} is {record.size} bytes queued, "
                    f"over MAILQUEUE['MAX_MESSAGE_SIZE'] = {config.max_message_size}"
                )
        if config.on_commit is not None:
            from django.db import transaction

            # Queued when the transaction commits; nothing if it rolls back.
            # robust: the request that committed must not fail afterwards; a
            # failure is logged at ERROR (and the fallback store is used).
            transaction.on_commit(
                lambda: self._enqueue(config, records, queued, deferred=True),
                using=config.on_commit,
                robust=True,
            )
            return len(records)
        if not self._enqueue(config, records, queued):
            return 0
        return len(records)

    def _enqueue(
        self, config: Config, records: list[Record], queued: list[Any], deferred: bool = False
    ) -> bool:
        if self._store(config, records, queued, deferred):
            for item in queued:
                message_queued.send(
                    sender=type(self), message_id=item.id, recipients=item.recipients
                )
            if config.task is not None:
                _flush_after_commit(config.task, config.on_commit)
            return True
        return False

    def _store(
        self, config: Config, records: list[Record], queued: list[Any], deferred: bool
    ) -> bool:
        fail_silently = self.fail_silently or deferred
        recipients = "; ".join(", ".join(item.recipients) for item in queued)
        try:
            get_store(config.store, config.namespace).enqueue(records)
            return True
        except StoreUnavailable as exc:
            if config.fallback_store is None:
                logger.error(
                    "could not queue %d message(s) to %s: %s", len(records), recipients, exc
                )
                if fail_silently:
                    return False
                raise
            logger.warning(
                "store unavailable (%s); queueing %d message(s) to %s in the fallback store",
                exc,
                len(records),
                recipients,
            )
        try:
            fallback = get_store(config.fallback_store, config.namespace, "FALLBACK_STORE")
            fallback.enqueue(records)
            return True
        except StoreUnavailable:
            logger.error(
                "could not queue %d message(s) to %s: the store and the fallback store "
                "are both unavailable",
                len(records),
                recipients,
            )
            if fail_silently:
                return False
            raise


def _flush_after_commit(task: TaskSetting, using: str | None) -> None:
    """``MAILQUEUE["TASK"]``: enqueue the flush task once the transaction commits (at
    once outside one, and so at once when ON_COMMIT already waited for the commit)."""
    from django.db import transaction

    transaction.on_commit(lambda: _enqueue_flush(task), using=using)


def _enqueue_flush(task: TaskSetting) -> None:
    try:
        from mailqueue_core.tasks import enqueue_flush

        enqueue_flush(task)
    except Exception as exc:
        # The mail is queued: cron, a service or the next task delivers it. The
        # request must not fail for a trigger (the system check says what is wrong).
        logger.error(
            "queued, but could not enqueue the flush task (MAILQUEUE['TASK']): %s: %s",
            type(exc).__name__,
            redact(str(exc)),
        )
