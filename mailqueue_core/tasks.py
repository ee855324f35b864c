"""The flush as a ``django.tasks`` task: :data:`flush`, enqueued by ``MAILQUEUE["TASK"]``.

It uses Django's ``django.tasks`` (Django >= 6.0), or the ``django-tasks``
backport (``django_tasks``) on an older Django; importing this module without
either raises ImportError saying what to install. The task runs
:func:`~mailqueue_core.task_flush.run_flush`: one flush from the site's
settings, JSON arguments ``limit`` and ``time_limit`` (both optional), a
JSON-able summary as its return value. It raises only for configuration
errors, never for mail that could not be delivered: retries are mailqueue's
(leases and due times), not the task backend's.

With ``MAILQUEUE["TASK"]`` on, the email backend enqueues it once per
``send_messages()`` call that queued mail, after the transaction commits
(:func:`enqueue_flush`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mailqueue_core.config import TaskSetting
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.task_flush import run_flush

__all__ = ["enqueue_flush", "flush", "invalid", "runs_in_request"]

#: Where a tasks framework may be found, preferred first.
_FRAMEWORKS = ("django.tasks", "django_tasks")
#: The backends that run a task inside ``enqueue()``, hence inside the request.
_IMMEDIATE = ("django.tasks.backends.immediate", "django_tasks.backends.immediate")


def _framework() -> ModuleType:
    for name in _FRAMEWORKS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "mailqueue_core.tasks needs a tasks framework: Django >= 6.0 (django.tasks), or on "
        "an older Django the backport: pip install django-tasks"
    )


framework = _framework()


def _as_task(function: Callable[..., Any]) -> Any:
    """``function`` as a task of the site's ``MAILQUEUE["TASK"]`` backend and queue.

    A task is checked against its backend when it is defined, and the workers
    import it by name: defined for the ``"default"`` queue only, it could not
    be imported where the backend has no such queue.
    """
    from mailqueue_core.django_settings import get_config

    try:
        setting = get_config().task
    except ConfigurationError:
        setting = None  # the system check (mailqueue.E001) says why
    if setting is not None:
        try:
            return framework.task(**setting.using())(function)
        except Exception:  # noqa: S110 - enqueue_flush() raises it again, the check reports it
            pass
    return framework.task(function)


@_as_task
def flush(limit: int | None = None, time_limit: float | None = None) -> dict[str, Any]:
    """Deliver what is due now; ``{"sent", "deferred", "buried", "elapsed", "paused",
    "error"}`` (see :func:`~mailqueue_core.task_flush.run_flush`)."""
    return run_flush(limit=limit, time_limit=time_limit)


def enqueue_flush(setting: TaskSetting) -> Any:
    """Enqueue :data:`flush` as ``setting`` says; the backend's task result."""
    return flush.using(**setting.using()).enqueue()


def invalid(setting: TaskSetting) -> str | None:
    """Why the backend would refuse the flush task as ``setting`` says, or None."""
    try:
        flush.using(**setting.using())
    except Exception as exc:  # InvalidTask, InvalidTaskBackend (the framework's own)
        return f"{type(exc).__name__}: {exc}"
    return None


def runs_in_request(setting: TaskSetting) -> bool:
    """Whether the backend runs the task inside ``enqueue()`` (an immediate backend)."""
    immediate = []
    for name in _IMMEDIATE:
        try:
            immediate.append(importlib.import_module(name).ImmediateBackend)
        except ImportError:
            continue
    return isinstance(framework.task_backends[setting.backend], tuple(immediate))
