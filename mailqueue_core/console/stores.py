"""The site's stores as the console opens them, and what it says about a store.

The console reads and repairs: like ``status``, it opens an existing queue
only (:meth:`~mailqueue_core.store.Store.without_creating`), so a mistyped
location shows as "cannot be reached" rather than as an empty, healthy queue.
It reuses the process's store (:func:`~mailqueue_core.django_settings.get_store`,
which holds the connection pool the site sends with) and closes only a twin
made for the request.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.locations import redact
from mailqueue_core.store import Capability, Store

__all__ = ["Described", "describe", "lacking", "opened"]


@contextlib.contextmanager
def opened(key: str = "STORE") -> Iterator[Store | None]:
    """The configured store (``key`` "STORE" or "FALLBACK_STORE"), existing queue only;
    None for a fallback store that is not configured.

    Raises :class:`~mailqueue_core.errors.ConfigurationError` for a bad setting; the
    store's calls raise :class:`~mailqueue_core.errors.StoreUnavailable`.
    """
    config = get_config()
    spec = config.store if key == "STORE" else config.fallback_store
    if spec is None:
        yield None
        return
    shared = get_store(spec, config.namespace, key)
    store = shared.without_creating()
    try:
        yield store
    finally:
        if store is not shared:
            store.close()


@dataclasses.dataclass(frozen=True)
class Described:
    """What the console shows of a store: never a password."""

    kind: str
    namespace: str
    location: str
    can_browse: bool
    can_pause: bool
    lacks: tuple[str, ...]
    """One sentence per missing capability the console would use: what the page
    cannot do and why."""


def lacking(store: Store, capability: Capability) -> str:
    """The sentence that says what the console cannot do with ``store``, and why."""
    kind = type(store).__name__
    if capability is Capability.BROWSE:
        return (
            f"This store ({kind}) cannot list its messages: it lacks the 'browse' "
            "capability (it keeps no index that can be read a page at a time). The console "
            "shows its counts and its dead letters, and can retry and purge them; it cannot "
            "list queued mail, open a message, send one now or delete one."
        )
    if capability is Capability.SENT_LOG:
        return (
            f"This store ({kind}) keeps no sent log: it lacks the 'sent_log' capability, so "
            "the console cannot say what was delivered, to whom or when."
        )
    if capability is Capability.HEARTBEAT:
        return (
            f"This store ({kind}) keeps no heartbeats: it lacks the 'heartbeat' capability, so "
            "the console cannot tell whether a flusher is running."
        )
    return (
        f"This store ({kind}) cannot pause delivery: it lacks the 'pause' capability (it "
        "keeps no pause flag that every flusher would see)."
    )


def describe(store: Store) -> Described:
    can_browse = Capability.BROWSE in store.capabilities
    can_pause = Capability.PAUSE in store.capabilities
    lacks = tuple(
        lacking(store, capability)
        for capability, present in ((Capability.BROWSE, can_browse), (Capability.PAUSE, can_pause))
        if not present
    )
    return Described(
        kind=type(store).__name__,
        namespace=store.namespace,
        location=redact(store.location),
        can_browse=can_browse,
        can_pause=can_pause,
        lacks=lacks,
    )
