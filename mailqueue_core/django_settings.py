"""Reading ``settings.MAILQUEUE`` (Django integration), and the stores it names.

Settings are read when used, never frozen at import. Stores are kept per
process and per configuration, because Django builds a new email backend for
every ``send_mail()`` and a store may hold a connection pool.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from mailqueue_core.config import DEFAULTS, Config
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Store

__all__ = ["get_config", "get_store", "reset"]

_stores: dict[tuple[str, str], Store] = {}
_configs: dict[str, Config] = {}
_lock = threading.Lock()


def _mailer_options() -> dict[str, Any] | None:
    """The queue's settings among the options of the first queueing ``MAILERS`` entry.

    Other options (``fail_silently``) belong to the backend, not to the queue.
    """
    for mailer in (getattr(settings, "MAILERS", None) or {}).values():
        if str(mailer.get("BACKEND", "")).startswith("mailqueue_core."):
            options = mailer.get("OPTIONS", {})
            return {k.upper(): v for k, v in options.items() if k.upper() in DEFAULTS}
    return None


def get_config(overrides: dict[str, Any] | None = None) -> Config:
    """``MAILQUEUE``, then the queueing mailer's ``OPTIONS``, then ``overrides``.

    The backend and the management command read the same merge, so mail
    queued through a mailer is found by ``manage.py mailqueue flush``.
    """
    # Read once per process (and again when the settings change): Django builds
    # a backend for every send_mail(), inside the web request.
    key = json.dumps(overrides, sort_keys=True, default=repr) if overrides else ""
    config = _configs.get(key)
    if config is None:
        raw = getattr(settings, "MAILQUEUE", None)
        mailer = _mailer_options()
        if mailer:
            raw = {**(raw or {}), **mailer}
        if overrides:
            raw = {**(raw or {}), **overrides}
        config = _configs[key] = Config.from_settings(raw)
    return config


def get_store(spec: Any, namespace: str, setting: str = "STORE") -> Store:
    """The process's store for ``spec`` (built on first use)."""
    key = (json.dumps(spec, sort_keys=True, default=repr), namespace)
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = make_store(spec, namespace=namespace, setting=f"MAILQUEUE['{setting}']")
                _stores[key] = store
    return store


def reset(**kwargs: Any) -> None:
    """Forget built stores and configs (settings changed, or a test wants a clean slate)."""
    if kwargs.get("setting") not in (None, "MAILQUEUE", "MAILERS"):
        return
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
        _configs.clear()
    for store in stores:
        store.close()


setting_changed.connect(reset, dispatch_uid="mailqueue_core.django_settings.reset")
