"""What each console button does to the store, and the notice it leaves.

Every action first looks each selected message up (:meth:`Store.get`), acts on
those whose state allows it, and says what became of the others: a message in
flight is never touched (its flusher may be sending it), one gone since the
page was drawn is "no longer in the queue", and one that changed between the
look-up and the act (claimed, delivered) is counted as changed meanwhile.
The same rules as the ``send-now``, ``delete`` and ``retry`` commands.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence

from django.contrib import messages

from mailqueue_core.commands.arguments import parse_duration
from mailqueue_core.console.stores import lacking
from mailqueue_core.store import Capability, State, Store

__all__ = ["Notice", "delete", "pause", "purge", "retry", "retry_all", "send_now"]


@dataclasses.dataclass(frozen=True)
class Notice:
    """What an action says afterwards (a Django messages level and its text)."""

    level: int
    text: str


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


def _notice(done: str, left: Sequence[str], *, trouble: bool) -> Notice:
    text = "; ".join([done, *left])
    return Notice(messages.WARNING if trouble else messages.SUCCESS, text)


class _Sorted:
    """The selected messages, by the state each is in now (None: gone)."""

    def __init__(self, store: Store, ids: Iterable[str], now: float) -> None:
        self.by_state: dict[State | None, list[str]] = {}
        for mid in dict.fromkeys(ids):
            entry = store.get(mid, now)
            self.by_state.setdefault(None if entry is None else entry.state, []).append(mid)

    def __getitem__(self, state: State | None) -> list[str]:
        return self.by_state.get(state, [])

    def except_(self, *states: State | None) -> list[str]:
        return [mid for state, ids in self.by_state.items() if state not in states for mid in ids]


def _left_alone(found: _Sorted, raced: int) -> list[str]:
    """What is said of the messages an action could not act on."""
    left = []
    if flying := len(found[State.IN_FLIGHT]):
        left.append(
            f"{flying} {_was(flying)} in flight and {_was(flying)} left alone (a flusher holds "
            "it and may be sending it now)"
        )
    if gone := len(found[None]):
        left.append(f"{gone} {'is' if gone == 1 else 'are'} no longer in the queue")
    if raced:
        left.append(f"{raced} changed meanwhile and {_was(raced)} left alone")
    return left


def _cannot(store: Store, capability: Capability) -> Notice | None:
    if capability in store.capabilities:
        return None
    return Notice(messages.ERROR, lacking(store, capability))


def send_now(store: Store, ids: Sequence[str], now: float) -> Notice:
    """Scheduled messages become due now (attempts kept); dead letters are revived."""
    if refused := _cannot(store, Capability.BROWSE):
        return refused
    found = _Sorted(store, ids, now)
    waiting, dead = found[State.SCHEDULED], found[State.DEAD]
    changed = store.send_now(waiting, now) if waiting else 0
    revived = store.revive(dead, now) if dead else 0
    left = []
    if ready := len(found[State.READY]):
        left.append(f"{ready} {_was(ready)} already due")
    if stuck := len(found[State.STUCK]):
        left.append(
            f"{stuck} {_was(stuck)} stuck (held past its lease by a flusher that stopped) and "
            f"{_was(stuck)} left alone: the next flush takes it back"
        )
    raced = len(waiting) - changed + len(dead) - revived
    trouble = _left_alone(found, raced)
    return _notice(f"{changed + revived} sent now", left + trouble, trouble=bool(trouble))


def delete(store: Store, ids: Sequence[str], now: float) -> Notice:
    """Queued messages and dead letters are deleted; one in flight is left alone."""
    if refused := _cannot(store, Capability.BROWSE):
        return refused
    found = _Sorted(store, ids, now)
    doomed = found.except_(None, State.IN_FLIGHT)
    count = store.delete(doomed, now) if doomed else 0
    trouble = _left_alone(found, len(doomed) - count)
    return _notice(f"{count} deleted", trouble, trouble=bool(trouble))


def retry(store: Store, ids: Sequence[str], now: float) -> Notice:
    """Dead letters go back to the queue, due now, with a full MAX_AGE again."""
    unique = list(dict.fromkeys(ids))
    if Capability.BROWSE not in store.capabilities:
        # revive() is in every store's contract; only the look-up needs "browse".
        count = store.revive(unique, now)
        missing = len(unique) - count
        left = [f"{missing} {_was(missing)} no longer a dead letter"] if missing else []
        return _notice(_retried(count), left, trouble=bool(left))
    found = _Sorted(store, unique, now)
    dead = found[State.DEAD]
    count = store.revive(dead, now) if dead else 0
    left = []
    if alive := len(found.except_(None, State.DEAD)):
        left.append(f"{alive} {_was(alive)} not a dead letter and {_was(alive)} left alone")
    trouble = left + _left_alone(found, len(dead) - count)
    return _notice(_retried(count), trouble, trouble=bool(trouble))


def _retried(count: int) -> str:
    return f"{_n(count, 'dead letter', 'dead letters')} retried (due now)"


def retry_all(store: Store, now: float) -> Notice:
    return _notice(_retried(store.revive(None, now)), [], trouble=False)


def purge(store: Store, older_than: str, now: float) -> Notice:
    """Dead letters buried more than ``older_than`` ago (3600, 90m, 12h, 7d) are deleted."""
    try:
        seconds = parse_duration(older_than)
    except argparse.ArgumentTypeError as exc:
        return Notice(messages.ERROR, f"Nothing purged: {exc}")
    count = store.purge(now - seconds)
    age = older_than.strip()
    return _notice(
        f"{_n(count, 'dead letter', 'dead letters')} purged (buried more than {age} ago)",
        [],
        trouble=False,
    )


def pause(store: Store, paused: bool) -> Notice:
    """Delivery paused or resumed for every flusher of the namespace."""
    if refused := _cannot(store, Capability.PAUSE):
        return refused
    store.set_paused(paused)
    if paused:
        text = (
            "Delivery paused: flushers send nothing until you resume it (the site still "
            "queues mail meanwhile)"
        )
    else:
        text = "Delivery resumed: the next flush delivers what is due"
    return Notice(messages.SUCCESS, text)
