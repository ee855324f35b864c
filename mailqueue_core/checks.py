"""System checks: a bad ``MAILQUEUE`` is reported at startup, saying what to change.

Every message passes through :func:`~mailqueue_core.locations.redact`: ``manage.py check``
output lands in CI logs and terminals, and never shows a password.

Each store is asked whether it can be opened and keep the queue's promises
(:meth:`~mailqueue_core.store.Store.verify`). A store that lives on this machine
(``Capability.LOCAL``: a SQLite file) is asked in the default checks, since that costs
a few ``stat`` calls; a network store (Redis, memcached) under ``manage.py check
--deploy`` only, since every ``runserver`` reload and most management commands run
the default checks and a server that drops packets costs its whole connect timeout
(see :doc:`/troubleshooting` for the measured costs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from mailqueue_core.config import ALLOWED, DEFAULTS
from mailqueue_core.errors import ConfigurationError, StoreError
from mailqueue_core.locations import redact
from mailqueue_core.store import Capability, Store

_REPORTER_FILTER = "mailqueue_core.reporting.SafeExceptionReporterFilter"


def _uses_queue() -> bool:
    backend = ""
    if getattr(settings, "MAILERS", None) is None and settings.is_overridden("EMAIL_BACKEND"):
        backend = settings.EMAIL_BACKEND
    mailers = getattr(settings, "MAILERS", {}) or {}
    return backend.startswith("mailqueue_core.") or any(
        str(m.get("BACKEND", "")).startswith("mailqueue_core.") for m in mailers.values()
    )


@register("mailqueue")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from mailqueue_core.django_settings import get_config
    from mailqueue_core.plugins import make_routes, make_store

    if getattr(settings, "MAILQUEUE", None) is None and not _uses_queue():
        return []
    try:
        config = get_config()
    except ConfigurationError as exc:
        return [Error(redact(str(exc)), hint=_setting_hint(exc.key), id="mailqueue.E001")]
    messages: list[Any] = []
    for key, spec in (("STORE", config.store), ("FALLBACK_STORE", config.fallback_store)):
        if spec is None:
            continue
        try:
            # Building a store checks its URL and options; stores connect lazily.
            store = make_store(spec, namespace=config.namespace, setting=f"MAILQUEUE['{key}']")
            store.close()
        except ConfigurationError as exc:
            messages.append(Error(redact(str(exc)), id="mailqueue.E002"))
            continue
        if key == "STORE":
            messages += _capability_warnings(type(store))
    try:
        make_routes(config.transport, config.transports).close()
    except ConfigurationError as exc:
        messages.append(Error(redact(str(exc)), id="mailqueue.E003"))
    if config.on_commit is not None and config.fallback_store is None:
        messages.append(
            Warning(
                "MAILQUEUE['ON_COMMIT'] queues mail after the transaction commits, when the "
                "request can no longer fail: if the store is down then, the mail is only "
                "logged.",
                hint="Set MAILQUEUE['FALLBACK_STORE'] (a local sqlite file) to keep it.",
                id="mailqueue.W003",
            )
        )
    if config.policy.max_age < config.policy.first:
        messages.append(
            Warning(
                f"MAILQUEUE['MAX_AGE'] ({config.policy.max_age:g}s) is shorter than the first "
                f"retry ({config.policy.first:g}s): a message that fails once is given up.",
                hint="Raise MAX_AGE or lower RETRY['FIRST'].",
                id="mailqueue.W002",
            )
        )
    return messages


def _setting_hint(key: str | None) -> str:
    """What the key at fault takes, and its default."""
    if key is None:
        return "Every key and what it takes: the settings reference of mailqueue's docs."
    default = "none, it is required" if key == "STORE" else repr(DEFAULTS[key])
    return f"MAILQUEUE['{key}'] takes {ALLOWED[key]}. Default: {default}."


def _capability_warnings(cls: type[Store]) -> list[CheckMessage]:
    """What the STORE cannot do, from its declared capabilities (never its name)."""
    can = cls.capabilities
    if Capability.SHARED not in can:
        lost = "." if Capability.DURABLE in can else ", and it is lost when the process exits."
        return [
            Warning(
                f"MAILQUEUE['STORE'] ({cls.__name__}) is not shared between processes: a "
                "flusher in another process (cron, a service) cannot see its mail" + lost,
                hint="Use 'sqlite:////var/spool/mailqueue.db' on one machine or a "
                "'redis://' URL on several; keep 'memory://' for tests.",
                id="mailqueue.W001",
            )
        ]
    if Capability.DURABLE not in can:
        reported = (
            "each loss is reported (mailqueue status, mailqueue dead)"
            if Capability.MAY_LOSE in can
            else "losses are not reported"
        )
        return [
            Warning(
                f"MAILQUEUE['STORE'] ({cls.__name__}) is not durable: a restart or an "
                f"eviction on its server loses queued mail; {reported}.",
                hint="Prefer 'redis://' or 'sqlite:///' when mail must survive a restart; "
                "silence mailqueue.W006 if you accept the risk.",
                id="mailqueue.W006",
            )
        ]
    return []


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(setting path, string) for every string in a nested settings value."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


@register("mailqueue")
def check_reporter_filter(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn when an error page or ADMINS mail would show a password of a queue URL."""
    if getattr(settings, "MAILQUEUE", None) is None and not _uses_queue():
        return []
    watched = {
        name: getattr(settings, name, None)
        for name in ("MAILQUEUE", "MAILERS")
        if getattr(settings, name, None) is not None
    }
    holding = [
        where
        for name, value in watched.items()
        for where, text in _strings(value, name)
        if redact(text) != text
    ]
    if not holding:
        return []
    path = settings.DEFAULT_EXCEPTION_REPORTER_FILTER
    try:
        reporter_filter = import_string(path)()
    except ImportError:
        return []  # Django reports a bad DEFAULT_EXCEPTION_REPORTER_FILTER where it is used
    # Judge the filter by what it shows, so that any filter that hides the password passes.
    shown = repr([reporter_filter.cleanse_setting(name, v) for name, v in watched.items()])
    if redact(shown) == shown:
        return []
    return [
        Warning(
            f"{', '.join(holding)} "
            f"{'hold URLs' if len(holding) > 1 else 'holds a URL'} with a password, and "
            f"DEFAULT_EXCEPTION_REPORTER_FILTER ({path}) shows it on Django's error pages "
            "and in the error mails sent to ADMINS.",
            hint=f"Set DEFAULT_EXCEPTION_REPORTER_FILTER = '{_REPORTER_FILTER}', or give the "
            "password in OPTIONS under a key named like 'password' (Django hides those), "
            "not in the URL.",
            id="mailqueue.W004",
        )
    ]


def _split_fix(text: str) -> tuple[str, str | None]:
    """A store's "what is wrong. Fix: what to do" as (message, hint)."""
    what, sep, fix = text.partition(" Fix: ")
    return (what, fix) if sep else (text, None)


@register("mailqueue")
def check_local_stores(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Open each store that lives on this machine (``Capability.LOCAL``), at every start."""
    return _verify_stores(local=True)


@register("mailqueue", deploy=True)
def check_staging(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``STAGING`` left on where the site is deployed (``--deploy``): say so."""
    from mailqueue_core.django_settings import get_config

    if getattr(settings, "MAILQUEUE", None) is None:
        return []
    try:
        staging = get_config().staging
    except ConfigurationError:
        return []  # mailqueue.E001 says why
    if staging is None:
        return []
    return [
        Warning(
            f"{staging.describe()} (MAILQUEUE['STAGING'] is set).",
            hint="Right for a staging site; on the production site remove "
            "MAILQUEUE['STAGING'], or silence mailqueue.W007 where it is meant.",
            id="mailqueue.W007",
        )
    ]


@register("mailqueue")
def check_task(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``TASK``: the flush task can be enqueued, and does not run inside the request."""
    from mailqueue_core.django_settings import get_config

    if getattr(settings, "MAILQUEUE", None) is None and not _uses_queue():
        return []
    try:
        task = get_config().task
    except ConfigurationError:
        return []  # mailqueue.E001 says why
    if task is None:
        return []
    try:
        from mailqueue_core import tasks
    except ImportError as exc:
        return [
            Error(f"MAILQUEUE['TASK'] is on, but {exc}", hint=_NO_TASK_HINT, id="mailqueue.E005")
        ]
    except Exception as exc:  # the framework refused to define the task for the site's TASKS
        why: str | None = f"{type(exc).__name__}: {exc}"
    else:
        why = tasks.invalid(task)
    if why is not None:
        return [
            Error(
                f"MAILQUEUE['TASK'] cannot enqueue the flush task on TASKS[{task.backend!r}], "
                f"queue {task.queue_name!r}: {why}",
                hint="Name an alias of TASKS as BACKEND, one of its QUEUES as QUEUE_NAME, and "
                "leave PRIORITY out where the backend has no priorities.",
                id="mailqueue.E005",
            )
        ]
    if tasks.runs_in_request(task):
        return [
            Warning(
                f"MAILQUEUE['TASK'] enqueues the flush task on TASKS[{task.backend!r}], an "
                "immediate backend, which runs it inside the request: every send_mail() "
                "waits for the SMTP server again.",
                hint="Use a tasks backend with a worker (e.g. the database backend and its "
                "db_worker), or remove MAILQUEUE['TASK'] and run 'manage.py mailqueue flush' "
                "from cron or as a service. Right in tests and development: silence "
                "mailqueue.W008 there.",
                id="mailqueue.W008",
            )
        ]
    return []


_NO_TASK_HINT = (
    "Install the django-tasks backport (pip install django-tasks) or upgrade to Django >= "
    "6.0, or remove MAILQUEUE['TASK'] and run 'manage.py mailqueue flush' from cron."
)


@register("mailqueue", deploy=True)
def check_stores(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Ask each network store's server whether it can keep the queue's promises (``--deploy``)."""
    return _verify_stores(local=False)


def _verify_stores(*, local: bool) -> list[CheckMessage]:
    from mailqueue_core.django_settings import get_config
    from mailqueue_core.plugins import make_store

    if getattr(settings, "MAILQUEUE", None) is None and not _uses_queue():
        return []
    try:
        config = get_config()
    except ConfigurationError:
        return []  # mailqueue.E001 says why
    messages: list[CheckMessage] = []
    for key, spec in (("STORE", config.store), ("FALLBACK_STORE", config.fallback_store)):
        if spec is None:
            continue
        setting = f"MAILQUEUE['{key}']"
        try:
            store = make_store(spec, namespace=config.namespace, setting=setting)
        except ConfigurationError:
            continue  # mailqueue.E002 says why
        try:
            if (Capability.LOCAL in store.capabilities) == local:
                messages += _verified(store, setting)
        finally:
            store.close()
    return messages


_UNFIT_HINT = (
    "The store cannot keep the queue's promises as it is set up: change what the message names."
)
_UNREACHABLE_HINT = (
    "Mail sent now would fail (or go to the FALLBACK_STORE). Check that the server runs at "
    "the URL's host and port and that the password is right. If only this machine cannot "
    "reach it (a build step), run 'manage.py check --deploy' where the site runs; a flusher "
    "checks again when it starts."
)


def _verified(store: Store, setting: str) -> list[CheckMessage]:
    """What ``store.verify()`` finds, the store's own fix (``... Fix: ...``) as the hint."""
    error: Exception
    try:
        store.verify()
    except ConfigurationError as exc:
        unfit, error = True, exc
    except StoreError as exc:  # StoreUnavailable, as the contract says, or a store's bug
        unfit, error = False, exc
    else:
        return []
    what, fix = _split_fix(redact(str(error)))
    if unfit:
        return [Error(f"{setting}: {what}", hint=fix or _UNFIT_HINT, id="mailqueue.E004")]
    message = f"{setting} cannot be reached: {what}"
    return [Warning(message, hint=fix or _UNREACHABLE_HINT, id="mailqueue.W005")]
