"""One flush for a task queue's worker (django.tasks, Celery, RQ...): :func:`run_flush`.

It runs what ``manage.py mailqueue flush --quiet`` runs, from the site's settings:
the fallback store's mail is moved into the store first (or delivered straight
from the fallback when the store is down), then one flush, the store checked
before anything is claimed. It needs no tasks framework, so a Celery task can
call it on any Django; :mod:`mailqueue_core.tasks` wraps it as a ``django.tasks``
task.

Retries stay mailqueue's: a message that cannot be delivered now is requeued
with its due time, or buried, by the flusher, as from cron. So the only
exceptions are configuration errors (:class:`~mailqueue_core.errors.ConfigurationError`,
a bad argument): a task backend that retried a failed task would otherwise
flush again at its own pace, beside mailqueue's backoff. A store that cannot
be reached is logged and reported in the summary (``error``); the mail waits
in the store for the next flush.

Unlike the command, it leaves the process's signals alone: the worker that
runs it (a Celery worker, ``db_worker``) answers SIGTERM itself.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

from mailqueue_core.commands.flush import from_the_fallback
from mailqueue_core.commands.interrupts import Interrupts
from mailqueue_core.commands.worker import flush_one
from mailqueue_core.errors import StoreError
from mailqueue_core.flusher import FlushResult
from mailqueue_core.locations import redact
from mailqueue_core.text import get_logger

__all__ = ["run_flush"]

logger = get_logger("mailqueue.tasks")


def run_flush(limit: int | None = None, time_limit: float | None = None) -> dict[str, Any]:
    """Deliver what is due now through the site's ``MAILQUEUE``; a JSON-able summary.

    ``limit``: stop after that many messages; ``time_limit``: after that many
    seconds (both optional, as ``flush --limit --time-limit``). The summary:
    ``sent``, ``deferred``, ``buried``, ``elapsed`` (seconds), ``paused``
    (delivery is paused, ``mailqueue resume``) and ``error`` (why the store
    failed, or None).
    """
    from mailqueue_core.django_settings import get_config
    from mailqueue_core.signals import SignalListener

    _check(limit, "limit", integer=True)
    _check(time_limit, "time_limit", integer=False)
    conf = get_config()
    started = time.monotonic()
    log = _Log()
    error = None
    try:
        if conf.fallback_store is not None:
            conf, _ = from_the_fallback(conf, log)
        options = argparse.Namespace(loop=False, limit=limit, time_limit=time_limit)
        result = flush_one(options, conf, Interrupts(), SignalListener, io.StringIO())
    except StoreError as exc:
        error = redact(str(exc))
        logger.error("flush task: the store failed; the mail waits in it: %s", error)
        result = FlushResult(elapsed=time.monotonic() - started)
    else:
        if result.buried:
            logger.warning("flush task: %d message(s) buried; see 'mailqueue dead'", result.buried)
        logger.info("flush task: %s", result.summary())
    return {
        "sent": result.sent,
        "deferred": result.deferred,
        "buried": result.buried,
        "elapsed": round(result.elapsed, 3),
        "paused": result.paused,
        "error": error,
    }


def _check(value: Any, name: str, *, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        what = "a positive integer" if integer else "a positive number of seconds"
        raise ValueError(f"the flush task's {name} must be None or {what}, got {value!r}")


class _Log(io.StringIO):
    """The stderr the fallback's handling writes to, as log records: a worker has no
    terminal, its log is where people look. ``plain`` is for what is not a problem."""

    level = "warning"

    def write(self, text: str) -> int:
        for line in text.splitlines():
            getattr(logger, self.level)("flush task: %s", line.removeprefix("mailqueue: "))
        return len(text)

    @property
    def plain(self) -> _Log:
        quiet = _Log()
        quiet.level = "info"
        return quiet
