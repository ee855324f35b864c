"""Finding stores and transports: stevedore entry points are the only registry.

A plugin is named by its entry-point name (``"sqlite"``), by a URL whose
scheme is that name (``"sqlite:////var/spool/mq.db"``), or by a dict
``{"NAME": name-or-URL, "OPTIONS": {...}}``. Bundled plugins are found exactly
as a third party's are. A name that is not installed, or a plugin that fails
to import, is a :class:`~mailqueue_core.errors.ConfigurationError` that names
the setting and the installed names, and suggests the nearest.
"""

from __future__ import annotations

import contextvars
import difflib
import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any, cast

from stevedore import DriverManager
from stevedore.exception import NoMatches

from mailqueue_core.errors import ConfigurationError, reject_unknown_keys
from mailqueue_core.locations import plugin_name, redact, redact_value
from mailqueue_core.store import Store
from mailqueue_core.transport import Transport

__all__ = [
    "STORES",
    "TRANSPORTS",
    "installed",
    "load_plugin_class",
    "make_routes",
    "make_store",
    "make_transport",
    "split_spec",
]

STORES = "mailqueue.stores"
TRANSPORTS = "mailqueue.transports"


def installed(namespace: str) -> list[str]:
    """Names registered in ``namespace`` (without importing any plugin)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=namespace)})


def _raise_load_failure(manager: Any, entrypoint: Any, exc: BaseException) -> None:
    raise ConfigurationError(
        redact(
            f"the plugin {entrypoint.name!r} ({entrypoint.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        )
    ) from _cause(exc)


_looking_up = contextvars.ContextVar("mailqueue_looking_up", default=False)


class _SaidByUs(logging.Filter):
    """Drops stevedore's "Could not load <name>" while we look a name up: our own
    error says it, with the installed names and the nearest (and stevedore's
    switch for it is deprecated)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _looking_up.get()


logging.getLogger("stevedore.named").addFilter(_SaidByUs())


def load_plugin_class(namespace: str, name: str, setting: str) -> type:
    """The class registered as ``name``; a clear ConfigurationError otherwise."""
    looking = _looking_up.set(True)
    try:
        manager = DriverManager(
            namespace,
            name,
            invoke_on_load=False,
            on_load_failure_callback=_raise_load_failure,
        )
    except NoMatches:
        names = installed(namespace)
        near = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigurationError(
            f"{setting}: no {namespace.split('.')[-1][:-1]} named {name!r} is installed. "
            f"Installed: {', '.join(names) or 'none'}.{hint}"
        ) from None
    finally:
        _looking_up.reset(looking)
    return cast(type, manager.driver)


def _redacted(text: str) -> ConfigurationError:
    """A plugin's error without the passwords of URLs in it.

    A third party's plugin may quote its URL as it was given; so may Python's own
    errors. The original is chained only when it holds no password (:func:`_cause`).
    """
    return ConfigurationError(redact(text))


def _cause(exc: BaseException) -> BaseException | None:
    """``exc`` to chain, or None when it or what it chains holds a password.

    A traceback prints each chained exception's message.
    """
    link: BaseException | None = exc
    while link is not None:
        if redact(str(link)) != str(link):
            return None
        link = link.__cause__ or link.__context__
    return exc


def split_spec(spec: Any, setting: str) -> tuple[str, str, dict[str, Any]]:
    """(plugin name, location, options) from a name, a URL or a NAME/OPTIONS dict."""
    options: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        reject_unknown_keys(setting, spec, ("NAME", "OPTIONS"))
        if "NAME" not in spec:
            raise ConfigurationError(f"{setting}: NAME is required")
        raw_options = spec.get("OPTIONS") or {}
        if not isinstance(raw_options, Mapping):
            raise ConfigurationError(f"{setting}['OPTIONS'] must be a dict")
        options = dict(raw_options)
        spec = spec["NAME"]
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(
            f"{setting} must be a name, a URL or a dict with NAME, got {redact_value(spec)!r}"
        )
    spec = spec.strip()
    name = plugin_name(spec)
    if name is None:
        return spec.lower(), "", options
    return name, spec, options


def make_store(spec: Any, *, namespace: str | None = None, setting: str = "STORE") -> Store:
    """Build the store ``spec`` names; ``namespace`` unless the spec sets its own."""
    name, location, options = split_spec(spec, setting)
    cls = load_plugin_class(STORES, name, setting)
    if namespace is not None and "namespace" not in options and "namespace=" not in location:
        options["namespace"] = namespace
    try:
        store = cls(location, **options)
    except ConfigurationError as exc:
        raise _redacted(f"{setting}: {exc}") from _cause(exc)
    except TypeError as exc:
        raise _redacted(f"{setting}: bad options for store {name!r}: {exc}") from _cause(exc)
    if not isinstance(store, Store):
        raise ConfigurationError(f"{setting}: {name!r} is not a mailqueue Store")
    return store


def make_transport(spec: Any, *, setting: str = "TRANSPORT") -> Transport:
    """Build the transport ``spec`` names; a list is a failover list, tried in order."""
    if isinstance(spec, (list, tuple)):
        from mailqueue_core.routing import FailoverTransport

        if not spec:
            raise ConfigurationError(f"{setting}: an empty list names no transport")
        return FailoverTransport(
            [make_transport(item, setting=f"{setting}[{i}]") for i, item in enumerate(spec)]
        )
    name, location, options = split_spec(spec, setting)
    cls = load_plugin_class(TRANSPORTS, name, setting)
    try:
        transport = cls(location, **options)
    except ConfigurationError as exc:
        raise _redacted(f"{setting}: {exc}") from _cause(exc)
    except TypeError as exc:
        raise _redacted(
            f"{setting}: bad options for transport {name!r} ({location}): {exc}"
        ) from _cause(exc)
    if not isinstance(transport, Transport):
        raise ConfigurationError(f"{setting}: {name!r} is not a mailqueue Transport")
    return transport


def make_routes(default: Any, routes: Mapping[str, Any]) -> Transport:
    """The default transport, plus the named routes messages may choose."""
    transport = make_transport(default, setting="MAILQUEUE['TRANSPORT']")
    if not routes:
        return transport
    from mailqueue_core.routing import RoutingTransport

    return RoutingTransport(
        transport,
        {
            name: make_transport(spec, setting=f"MAILQUEUE['TRANSPORTS'][{name!r}]")
            for name, spec in routes.items()
        },
    )
