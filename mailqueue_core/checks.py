"""System checks: a bad ``MAILQUEUE`` is reported at startup, saying what to change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from mailqueue_core.errors import ConfigurationError


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
    from mailqueue_core.plugins import make_routes, make_store, split_spec

    if getattr(settings, "MAILQUEUE", None) is None and not _uses_queue():
        return []
    try:
        config = get_config()
    except ConfigurationError as exc:
        return [Error(str(exc), hint="Fix the MAILQUEUE setting.", id="mailqueue.E001")]
    messages: list[Any] = []
    for key, spec in (("STORE", config.store), ("FALLBACK_STORE", config.fallback_store)):
        if spec is None:
            continue
        try:
            name, _, _ = split_spec(spec, f"MAILQUEUE['{key}']")
            # Building a store checks its URL and options; stores connect lazily.
            make_store(spec, namespace=config.namespace, setting=f"MAILQUEUE['{key}']").close()
        except ConfigurationError as exc:
            messages.append(Error(str(exc), id="mailqueue.E002"))
            continue
        if name == "memory" and key == "STORE":
            messages.append(
                Warning(
                    "MAILQUEUE['STORE'] is the in-memory store: a flusher in another "
                    "process (cron, a service) cannot see its mail, and it is lost when "
                    "the process exits.",
                    hint="Use 'sqlite:////var/spool/mailqueue.db' on one machine or a "
                    "'redis://' URL on several; keep 'memory://' for tests.",
                    id="mailqueue.W001",
                )
            )
    try:
        make_routes(config.transport, config.transports).close()
    except ConfigurationError as exc:
        messages.append(Error(str(exc), id="mailqueue.E003"))
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
