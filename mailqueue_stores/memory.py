"""In-memory store: a queue that lives in one Python process.

What it is
    A dict and a heap behind a lock. For tests, and for a process that both
    sends mail and runs the flusher in a thread. Nothing survives the process.

URL format
    ``memory://`` or ``memory://NAME``: stores with the same NAME and namespace
    in one process share one queue (as Django's locmem cache does), so the
    queueing backend and a flusher in the same process see the same mail;
    ``memory://NAME?namespace=shop`` names the namespace in the URL.

Options
    ``namespace`` only, read through :func:`mailqueue_core.options.read_options`
    like every store's options (anything else is an error listing it).

Capabilities and what it can lose
    ``rate_limit`` (within the process), ``browse``, ``pause``,
    ``sent_log``, ``heartbeat`` and ``wake``. Not shared,
    nothing durable: every queued message is lost when the process exits. Use
    ``sqlite`` on one machine, ``redis`` on several. A page of ``browse`` sorts
    the state's records in memory (it costs in proportion to the queue): this
    store is for tests and small in-process queues.
"""

from __future__ import annotations

import heapq
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mailqueue_core.cursors import decode_cursor, encode_cursor
from mailqueue_core.errors import LeaseLost
from mailqueue_core.options import read_options, split_query
from mailqueue_core.ratelimit import LocalLimits
from mailqueue_core.store import (
    Capability,
    Claim,
    DeadLetter,
    Entry,
    Page,
    Record,
    SentRecord,
    State,
    Stats,
    Store,
)

_queues: dict[tuple[str, str], _Queue] = {}
_queues_lock = threading.Lock()


@dataclass
class _Entry:
    record: Record
    token: str | None = None
    expires: float = 0.0
    due: float = 0.0
    """The due time before the first claim; a release puts it back."""


class _Queue:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[str, _Entry] = {}
        # (due, seq, id); stale items (acked or re-timed ids) are skipped on pop.
        self.heap: list[tuple[float, int, str]] = []
        self.seq = 0
        self.dead: dict[str, DeadLetter] = {}
        self.limits = LocalLimits()
        self.paused = False
        # Wake-ups: bumped when mail may have become due, waited on by flushers.
        self.wakes = 0
        self.woken = threading.Condition(self.lock)
        self.sent: dict[tuple[float, str], SentRecord] = {}
        self.beats: dict[str, tuple[float, float]] = {}

    def push(self, record: Record) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (record.due, self.seq, record.id))

    def wake(self) -> None:
        """Mail may be due now: wake the waiting flushers (the lock is held)."""
        self.wakes += 1
        self.woken.notify_all()


@dataclass(frozen=True)
class MemoryOptions:
    """The memory store takes no option but ``namespace``."""


class MemoryStore(Store):
    capabilities = frozenset(
        {
            Capability.RATE_LIMIT,
            Capability.LOCAL,
            Capability.BROWSE,
            Capability.PAUSE,
            Capability.SENT_LOG,
            Capability.HEARTBEAT,
            Capability.WAKE,
        }
    )

    def __init__(self, location: str = "memory://", **options: object) -> None:
        bare, query = split_query(location, "memory store")
        namespace, _ = read_options(MemoryOptions, "memory store", query, options)
        super().__init__(location, namespace=namespace)
        name = bare.split("://", 1)[-1]
        with _queues_lock:
            self._q = _queues.setdefault((name, self.namespace), _Queue())
        self._seen: int | None = None

    def enqueue(self, records: Sequence[Record]) -> None:
        q = self._q
        with q.lock:
            for record in records:
                if record.id in q.live or record.id in q.dead:
                    continue
                q.live[record.id] = _Entry(record)
                q.push(record)
            q.wake()

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        q = self._q
        claims: list[Claim] = []
        with q.lock:
            self._seen = q.wakes
            while q.heap and len(claims) < limit and q.heap[0][0] <= now:
                due, _, mid = heapq.heappop(q.heap)
                entry = q.live.get(mid)
                if entry is None or entry.record.due != due:
                    continue  # stale heap item
                if entry.token is not None and entry.expires > now:
                    continue  # held; its heap item is re-pushed when the lease is taken
                if entry.token is None:
                    entry.due = due
                entry.token = uuid.uuid4().hex
                entry.expires = now + lease
                # Re-push at the lease expiry so an abandoned claim comes back.
                entry.record = replace(entry.record, due=entry.expires)
                q.push(entry.record)
                record = replace(entry.record, due=entry.due)
                claims.append(Claim(record, entry.token, entry.expires))
        return claims

    def _take(self, claim: Claim) -> _Entry:
        entry = self._q.live.get(claim.id)
        if entry is None or entry.token != claim.token:
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")
        return entry

    def ack(self, claim: Claim) -> None:
        with self._q.lock:
            self._take(claim)
            del self._q.live[claim.id]

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        with self._q.lock:
            entry = self._take(claim)
            entry.record = replace(
                entry.record, due=due, attempts=entry.record.attempts + 1, last_error=error
            )
            entry.token = None
            self._q.push(entry.record)
            self._q.wake()

    def release(self, claim: Claim) -> None:
        with self._q.lock:
            entry = self._take(claim)
            entry.record = replace(entry.record, due=entry.due)
            entry.token = None
            self._q.push(entry.record)
            self._q.wake()

    def bury(self, claim: Claim, error: str, now: float) -> None:
        with self._q.lock:
            entry = self._take(claim)
            del self._q.live[claim.id]
            record = replace(claim.record, attempts=entry.record.attempts + 1, last_error=error)
            self._q.dead[claim.id] = DeadLetter(record, error, now)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        with self._q.lock:
            for record in records:
                self._q.dead[record.id] = DeadLetter(record, record.last_error or "", now)

    def stats(self, now: float) -> Stats:
        ready = scheduled = in_flight = stuck = 0
        oldest: float | None = None
        next_due: float | None = None
        with self._q.lock:
            for entry in self._q.live.values():
                if entry.token is not None:
                    if entry.expires > now:
                        in_flight += 1
                    else:
                        stuck += 1
                elif entry.record.due > now:
                    scheduled += 1
                    due = entry.record.due
                    next_due = due if next_due is None else min(next_due, due)
                else:
                    ready += 1
                    created = entry.record.created
                    oldest = created if oldest is None else min(oldest, created)
            dead = len(self._q.dead)
        return Stats.counted(
            now,
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            oldest_created=oldest,
            stuck=stuck,
            next_due=next_due,
        )

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._q.lock:
            letters = sorted(self._q.dead.values(), key=lambda d: (d.buried, d.record.id))
        return letters if limit is None else letters[:limit]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        q = self._q
        with q.lock:
            chosen = list(q.dead) if ids is None else [i for i in ids if i in q.dead]
            for mid in chosen:
                letter = q.dead.pop(mid)
                record = replace(letter.record, due=now, created=now, attempts=0)
                q.live[mid] = _Entry(record)
                q.push(record)
            q.wake()
        return len(chosen)

    def purge(self, buried_before: float) -> int:
        with self._q.lock:
            old = [mid for mid, d in self._q.dead.items() if d.buried < buried_before]
            for mid in old:
                del self._q.dead[mid]
        return len(old)

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float:
        return self._q.limits.take_token(bucket, rate, burst, now)

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None:
        return self._q.limits.acquire_slot(name, limit, lease, now)

    def release_slot(self, name: str, token: str) -> None:
        self._q.limits.release_slot(name, token)

    # -- the console ---------------------------------------------------------------

    def _entry(self, mid: str, now: float) -> Entry | None:
        live = self._q.live.get(mid)
        if live is not None:
            if live.token is not None:
                state = State.IN_FLIGHT if live.expires > now else State.STUCK
                record = replace(live.record, due=live.due)
                return Entry(record, state, expires=live.expires)
            state = State.SCHEDULED if live.record.due > now else State.READY
            return Entry(live.record, state)
        letter = self._q.dead.get(mid)
        if letter is None:
            return None
        return Entry(letter.record, State.DEAD, buried=letter.buried, reason=letter.reason)

    def browse(
        self,
        state: State,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        after = None if cursor is None else decode_cursor(cursor)
        with self._q.lock:
            ids = list(self._q.live) if state is not State.DEAD else list(self._q.dead)
            entries = [e for e in (self._entry(mid, now) for mid in ids) if e]
        keyed = [(_order_key(e), e) for e in entries if e.state is state]
        if after is not None:
            keyed = [(k, e) for k, e in keyed if (k < after if newest_first else k > after)]
        keyed.sort(key=lambda item: item[0], reverse=newest_first)
        page = [e for _, e in keyed[: limit + 1]]
        if len(page) <= limit:
            return Page(page)
        last = page[limit - 1]
        return Page(page[:limit], encode_cursor(*_order_key(last)))

    def get(self, record_id: str, now: float) -> Entry | None:
        with self._q.lock:
            return self._entry(record_id, now)

    def delete(self, ids: Iterable[str], now: float) -> int:
        deleted = 0
        with self._q.lock:
            for mid in set(ids):
                live = self._q.live.get(mid)
                gone = False
                if live is not None and not (live.token is not None and live.expires > now):
                    del self._q.live[mid]  # its heap item is skipped as stale
                    gone = True
                # An id can be queued and dead at once (add_dead of a split-off part).
                gone = self._q.dead.pop(mid, None) is not None or gone
                deleted += gone
        return deleted

    def send_now(self, ids: Iterable[str], now: float) -> int:
        changed = 0
        with self._q.lock:
            for mid in set(ids):
                live = self._q.live.get(mid)
                if live is None or live.token is not None or live.record.due <= now:
                    continue
                live.record = replace(live.record, due=now)
                self._q.push(live.record)
                changed += 1
            self._q.wake()
        return changed

    def paused(self) -> bool:
        return self._q.paused

    def wait_for_mail(self, timeout: float) -> bool:
        q = self._q
        with q.lock:
            seen = q.wakes if self._seen is None else self._seen
            woken = q.woken.wait_for(lambda: q.wakes != seen, max(0.0, timeout))
            self._seen = q.wakes  # a wake-up is answered once
            return woken

    def beat(self, flusher: str, now: float, expires: float) -> None:
        with self._q.lock:
            self._q.beats[flusher] = (now, expires)

    def beats(self, now: float) -> dict[str, float]:
        with self._q.lock:
            return {name: at for name, (at, until) in self._q.beats.items() if until > now}

    # -- the sent log -------------------------------------------------------------------

    def log_sent(self, records: Sequence[SentRecord], expires: float) -> None:
        with self._q.lock:
            for record in records:
                self._q.sent.setdefault((record.sent, record.id), record)

    def sent_log(
        self,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page[SentRecord]:
        after = None if cursor is None else decode_cursor(cursor)
        with self._q.lock:
            keys = sorted(self._q.sent, reverse=newest_first)
            if after is not None:
                keys = [k for k in keys if (k < after if newest_first else k > after)]
            chosen = [self._q.sent[k] for k in keys[: limit + 1]]
        if len(chosen) <= limit:
            return Page(chosen)
        last = chosen[limit - 1]
        return Page(chosen[:limit], encode_cursor(last.sent, last.id))

    def count_sent(self, since: float) -> int:
        with self._q.lock:
            return sum(1 for sent, _ in self._q.sent if sent >= since)

    def prune_sent(self, sent_before: float) -> int:
        with self._q.lock:
            old = [key for key in self._q.sent if key[0] < sent_before]
            for key in old:
                del self._q.sent[key]
        return len(old)

    def set_paused(self, paused: bool) -> None:
        with self._q.lock:
            self._q.paused = paused
            if not paused:
                self._q.wake()  # held mail goes at once, not at the next poll


def _order_key(entry: Entry) -> tuple[float, str]:
    """Where ``entry`` sorts within its state (see :meth:`Store.browse`)."""
    if entry.state is State.DEAD:
        return (entry.buried or 0.0, entry.id)
    if entry.expires is not None:
        return (entry.expires, entry.id)
    return (entry.record.due, entry.id)
