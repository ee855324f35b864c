"""memcached store: a shared queue in one or more memcached servers, losses reported.

What it is
    A queue for sites that already run memcached and no Redis. memcached has no
    lists, sorted sets or key scans, evicts items when memory runs short and
    forgets everything on restart; this store indexes messages in rings of
    ``incr``-numbered slots per 10-second due-time bucket, claims by ``cas``,
    and detects every loss it can (see ``docs/stores/memcached.rst``).

URL format
    ``memcached://host:port`` (port defaults to 11211), several servers as
    ``memcached://h1:p1,h2:p2``, IPv6 as ``memcached://[::1]:11211``; any
    option may also be given in the query (``?namespace=site1&timeout=2``).

Options
    ``namespace`` (str, ``"default"``); ``servers`` (list of ``"host:port"``,
    instead of servers in the URL); ``connect_timeout`` and ``timeout``
    (float seconds, pymemcache's defaults: none); ``max_item_size`` (int bytes,
    1 MiB - 1024, memcached's default ``-I 1m`` less room for the key and item
    header; raise it together with the server's ``-I``).

Capabilities and what it can lose
    ``shared``, ``may_lose``. Not ``durable``: a restart empties memcached and
    an eviction can drop a message before it is sent. Such a loss is never
    silent: the message is logged at ERROR with its id, counted in
    ``stats().lost`` and listed by ``dead_letters()`` with ``lost=True``. A
    restart is reported by clients that were running before it, with the
    number of messages they last saw queued (ids went with the server). A
    record larger than ``max_item_size`` raises ``MessageTooLarge`` at enqueue.
    Choose Redis or SQLite when mail must survive a restart.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from mailqueue_core.errors import LeaseLost, MessageTooLarge, StoreError
from mailqueue_core.store import Claim, DeadLetter, Record, Stats, Store
from mailqueue_stores import memcached_config as config
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_dead import DEAD_DATA_GONE, DeadLetterBook
from mailqueue_stores.memcached_layout import (
    Keys,
    decode,
    encode,
    header_for,
    known_facts,
    new_gen,
    place,
    record_from,
)
from mailqueue_stores.memcached_loss import LossLedger
from mailqueue_stores.memcached_ring import Rings
from mailqueue_stores.memcached_scan import Entry, Scanner, tombstone

DATA_GONE = "its data was evicted from memcached before it was delivered"


class MemcachedStore(Store):
    capabilities = frozenset({"shared", "may_lose"})
    max_record_size: ClassVar[int | None] = config.DEFAULT_MAX_ITEM_SIZE

    def __init__(self, location: str = "memcached://", **options: Any) -> None:
        settings = config.parse(location, options)
        super().__init__(location, namespace=settings.namespace)
        self.options = {k: v for k, v in options.items() if k != "namespace"}
        self.max_record_size = settings.max_item_size  # type: ignore[misc]
        self._client = MemcachedClient(
            settings.servers,
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
        )
        self._keys = Keys(self.namespace)
        self._rings = Rings(self._client, self._keys)
        self._ledger = LossLedger(self._client, self._keys, self._rings, self.namespace)
        self._scan = Scanner(self._client, self._keys, self._rings, self._ledger)
        self._dead = DeadLetterBook(
            self._client, self._keys, self._rings, self._ledger, self._scan
        )

    # -- enqueue -------------------------------------------------------------

    def _check_sizes(self, records: Sequence[Record]) -> None:
        for record in records:
            if len(record.data) > self.max_record_size:  # type: ignore[operator]
                raise MessageTooLarge(
                    f"message {record.id} is {len(record.data)} bytes; this memcached store"
                    f" holds at most {self.max_record_size} bytes per message. Start memcached"
                    " with a larger item size (memcached -I 4m) and set the store's"
                    " max_item_size option to match, or use the redis or sqlite store"
                )

    def enqueue(self, records: Sequence[Record]) -> None:
        self._check_sizes(records)
        wall = time.time()
        self._ledger.check_epochs(wall)
        unique: dict[str, Record] = {}
        for record in records:
            unique.setdefault(record.id, record)
        dead = self._client.get_many([self._keys.dead(mid) for mid in unique])
        fresh = [r for mid, r in unique.items() if self._keys.dead(mid) not in dead]
        by_bucket: dict[int, list[Record]] = {}
        for record in fresh:
            by_bucket.setdefault(place(record.due, wall), []).append(record)
        added: list[tuple[Record, str, str]] = []
        try:
            for bucket, group in by_bucket.items():
                for record, slot in zip(
                    group, self._rings.allocate(bucket, len(group)), strict=True
                ):
                    gen = new_gen()
                    header = {**header_for(record, slot, gen), "ring": bucket}
                    if self._claim_id(record.id, header):
                        added.append((record, slot, gen))
            self._client.set_many({self._keys.data(r.id, g): r.data for r, _, g in added})
            self._client.set_many({slot: r.id.encode() for r, slot, _ in added})
            for bucket in by_bucket:
                self._rings.raise_top(bucket)
        except StoreError:
            self._undo(added)
            raise
        if added:
            self._ledger.saw_live(self._client.counter(self._keys.live, len(added)))

    def _claim_id(self, mid: str, header: dict[str, Any]) -> bool:
        """Take the id for a new message; False when it is already queued.

        A header left by an enqueue that failed before writing its slot is taken
        over, so retrying that enqueue is not mistaken for a duplicate.
        """
        key = self._keys.header(mid)
        if self._client.add(key, encode(header)):
            return True
        raw, cas = self._client.gets(key)
        if raw is None:
            return self._client.add(key, encode(header))
        old = decode(raw)
        if old.get("done") or self._client.get_many([old["ptr"]]):
            return False
        return self._client.cas(key, encode(header), cas)  # type: ignore[arg-type]

    def _undo(self, added: list[tuple[Record, str, str]]) -> None:
        try:
            self._client.delete_many([slot for _, slot, _ in added])
            self._client.delete_many([self._keys.data(r.id, g) for r, _, g in added])
            self._client.delete_many([self._keys.header(r.id) for r, _, _ in added])
        except StoreError:
            pass  # the server is gone too: what it holds is unreachable anyway

    # -- claims ----------------------------------------------------------------

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        wall = time.time()
        self._ledger.check_epochs(wall)
        claims: list[tuple[Any, Claim]] = []
        for _ in range(4):  # more rounds only when other claimers took our picks
            wanted = limit - len(claims)
            entries = self._scan.queued(now, wall, enough=wanted)
            due = sorted((e for e in entries if e.claimable(now)), key=lambda e: e.order)
            taken: list[tuple[Entry, dict[str, Any], str]] = []
            raced = False
            for entry in due:
                if len(taken) == wanted:
                    break
                token = secrets.token_hex(16)
                header = {**entry.header, "tok": token, "exp": now + lease}
                key = self._keys.header(header["id"])
                if self._client.cas(key, encode(header), entry.cas):
                    taken.append((entry, header, token))
                else:
                    raced = True
            claims.extend(self._with_data(taken, now))
            if len(claims) >= limit or not raced:
                break
        return [claim for _, claim in sorted(claims, key=lambda t: t[0])]

    def _with_data(
        self, taken: list[tuple[Entry, dict[str, Any], str]], now: float
    ) -> list[tuple[Any, Claim]]:
        keys = [self._keys.data(h["id"], h["gen"]) for _, h, _ in taken]
        data = self._client.get_many(keys)
        claims = []
        for (entry, header, token), key in zip(taken, keys, strict=True):
            if key not in data:
                self._lose(header, token, now)
            else:
                claims.append(
                    (entry.order, Claim(record_from(header, data[key]), token, header["exp"]))
                )
        return claims

    def _lose(self, header: dict[str, Any], token: str, now: float) -> None:
        key = self._keys.header(header["id"])
        raw, cas = self._client.gets(key)
        if raw is not None and decode(raw).get("tok") == token:
            done = tombstone(header, keep_data=False)
            if self._client.cas(key, encode(done), cas):  # type: ignore[arg-type]
                self._ledger.report(known_facts(header), DATA_GONE, now)
                self._scan.finish(header["id"], done, header["gen"])

    def _held(self, claim: Claim) -> tuple[str, dict[str, Any], bytes]:
        key = self._keys.header(claim.id)
        raw, cas = self._client.gets(key)
        header = decode(raw) if raw is not None else {}
        if header.get("done") or header.get("tok") != claim.token:
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")
        return key, header, cas  # type: ignore[return-value]

    def _leave(self, claim: Claim, *, keep_data: bool) -> dict[str, Any]:
        """Turn a held message's header into a tombstone; the header as it was."""
        key, header, cas = self._held(claim)
        if not self._client.cas(key, encode(tombstone(header, keep_data=keep_data)), cas):
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")
        return header

    def ack(self, claim: Claim) -> None:
        header = self._leave(claim, keep_data=False)
        self._scan.finish(claim.id, tombstone(header, keep_data=False), header["gen"])
        self._ledger.saw_live(self._client.decrement(self._keys.live, 1) or 0)

    def release(self, claim: Claim) -> None:
        key, header, cas = self._held(claim)
        if not self._client.cas(key, encode({**header, "tok": None, "exp": 0.0}), cas):
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        key, header, cas = self._held(claim)
        lost = LeaseLost(f"message {claim.id} is no longer held by this claim")
        changes = {"due": due, "attempts": header["attempts"] + 1, "err": error, "tok": None}
        bucket = place(due, time.time())
        if bucket == header["ring"]:
            if not self._client.cas(key, encode({**header, **changes, "exp": 0.0}), cas):
                raise lost
            return
        # Moving to another bucket: announce the new slot in the header first
        # ("pend"), so no slot ever names the message without the header naming it.
        if header.get("old"):
            self._client.delete(header["old"])
        (slot,) = self._rings.allocate(bucket, 1)
        if not self._client.cas(key, encode({**header, "pend": slot, "old": None}), cas):
            raise lost
        self._client.set_many({slot: claim.id.encode()})
        self._rings.raise_top(bucket)
        raw, cas = self._client.gets(key)
        header = decode(raw) if raw is not None else {}
        moved = {**header, **changes, "exp": 0.0, "ring": bucket}
        moved.update(ptr=slot, pend=None, old=header.get("ptr"))
        if header.get("tok") != claim.token or header.get("pend") != slot:
            self._client.delete(slot)
            raise lost
        if not self._client.cas(key, encode(moved), cas):  # type: ignore[arg-type]
            self._client.delete(slot)
            raise lost
        self._client.delete(moved["old"])

    # -- dead letters ------------------------------------------------------------

    def bury(self, claim: Claim, error: str, now: float) -> None:
        _, header, _ = self._held(claim)
        record = record_from({**header, "err": error}, b"")
        (slot,) = self._dead.write([(record, header["gen"], now)], data=False)
        try:
            header = self._leave(claim, keep_data=True)
        except LeaseLost:
            self._client.delete(slot)
            raise
        self._scan.finish(claim.id, tombstone(header, keep_data=True), None)
        self._ledger.saw_live(self._client.decrement(self._keys.live, 1) or 0)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        self._check_sizes(records)
        self._dead.write([(r, new_gen(), now) for r in records], data=True)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        now = time.time()
        self._ledger.check_epochs(now)
        return self._dead.letters(limit, now)

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        return self._dead.revive(ids, now, time.time())

    def purge(self, buried_before: float) -> int:
        return self._dead.purge(buried_before)

    # -- counts ------------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        wall = time.time()
        self._ledger.check_epochs(wall)
        ready = scheduled = in_flight = dead = 0
        oldest: float | None = None
        for entry in self._scan.queued(now, wall):
            h = entry.header
            if not self._client.exists(self._keys.data(h["id"], h["gen"])):
                done = tombstone(h, keep_data=False)
                if self._client.cas(self._keys.header(h["id"]), encode(done), entry.cas):
                    self._ledger.report(known_facts(h), DATA_GONE, now)
                    self._scan.finish(h["id"], done, h["gen"])
            elif h["tok"] is not None and h["exp"] > now:
                in_flight += 1
            elif h["due"] > now:
                scheduled += 1
            else:
                ready += 1
                oldest = h["created"] if oldest is None else min(oldest, h["created"])
        for entry in self._dead.entries(now):
            h = entry.header
            if self._client.exists(self._keys.data(h["id"], h["gen"])):
                dead += 1
            elif self._client.delete(entry.slot.key):
                self._ledger.report(known_facts(h), DEAD_DATA_GONE, now)
                self._client.delete(self._keys.dead(h["id"]))
        return Stats(
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            lost=self._ledger.total(),
            oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
        )

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        servers = ",".join(self._client.servers)
        return f"<MemcachedStore {servers} namespace={self.namespace!r}>"
