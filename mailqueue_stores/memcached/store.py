"""memcached store: a shared queue in one or more memcached servers, losses reported.

What it is
    A queue for sites that already run memcached and no Redis. memcached has no
    lists, sorted sets or key scans, evicts items when memory runs short and
    forgets everything on restart; this store keeps each message whole on one
    server, indexes it in rings of ``incr``-numbered slots per 10-second
    due-time bucket, claims by ``cas``, and reports every loss it can find (see
    ``docs/stores/memcached.rst``).

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
    ``stats().lost`` and listed by ``dead_letters()`` with ``lost=True``. With
    several servers, a server restarted empty is reported exactly, by id, by
    any client, even one started after the restart (each server's journal is
    kept on another). With one server, a restart is reported by clients that
    were running before it, with the number of messages they last saw queued.
    A damaged record (a header or data item deleted, cut short or overwritten
    behind the store's back) is handed to the flusher for burial with
    ``record.damage`` set, or reported lost when nothing of its data is left.
    A record larger than ``max_item_size`` raises ``MessageTooLarge`` at
    enqueue. Choose Redis or SQLite when mail must survive a restart.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from mailqueue_core.errors import MessageTooLarge, StoreError
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_stores import memcached_config as config
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_journal import Journal
from mailqueue_stores.memcached_layout import Keys, as_int, decode_or_none, encode
from mailqueue_stores.memcached_scan import Entry
from mailqueue_stores.memcached_shard import Shard

#: Rounds of claiming in one ``fetch_due`` when other flushers took our picks.
ROUNDS = 4


class MemcachedStore(Store):
    capabilities = frozenset({Capability.SHARED, Capability.MAY_LOSE})
    max_record_size: ClassVar[int | None] = config.DEFAULT_MAX_ITEM_SIZE

    def __init__(self, location: str = "memcached://", **options: Any) -> None:
        settings = config.parse(location, options)
        super().__init__(location, namespace=settings.namespace)
        self.options = {k: v for k, v in options.items() if k != "namespace"}
        self.max_record_size = settings.max_item_size  # type: ignore[misc]
        self._keys = Keys(self.namespace)
        clients = [
            MemcachedClient(
                host, port, connect_timeout=settings.connect_timeout, timeout=settings.timeout
            )
            for host, port in settings.servers
        ]
        # Sorted by name, so every client agrees on each server's witness
        # whatever order its URL lists them in.
        self._shards = sorted(
            (Shard(c, self._keys, self.namespace) for c in clients), key=lambda s: s.name
        )
        if len(self._shards) > 1:
            for i, shard in enumerate(self._shards):
                witness = self._shards[(i + 1) % len(self._shards)]
                shard.counting = False
                shard.reports = witness.ledger
                shard.journal = Journal(
                    shard.name, witness.client, self._keys, witness.rings, witness.ledger
                )
        from pymemcache.client.rendezvous import RendezvousHash

        self._by_name = {s.name: s for s in self._shards}
        self._hasher = RendezvousHash(nodes=list(self._by_name))
        #: Each server's epoch token as this client last saw it.
        self._epochs: dict[str, str] = {}

    def _home(self, mid: str) -> Shard:
        return self._by_name[self._hasher.get_node(mid)]

    # -- epochs: finding out that a server was emptied -------------------------------

    def _check(self, wall: float, now: float, *, audit: bool | None) -> None:
        """Read every server's epoch marker; report what an emptied server took.

        ``audit``: None to only keep the journals' epochs listed (enqueue, in a
        web request), False to walk a journal of an emptied server unless this
        client already did, True to walk it in any case.
        """
        shards = self._shards
        found = []
        for i, shard in enumerate(shards):
            watched = shards[i - 1]  # the server this one is the witness of
            wanted = [self._keys.epoch, self._keys.live, self._keys.journals(watched.name)]
            found.append(shard.client.get_many(wanted))
        tokens = [
            self._epoch(shard, seen, wall) for shard, seen in zip(shards, found, strict=True)
        ]
        if len(shards) == 1:
            self._watch_alone(shards[0], found[0], tokens[0], wall)
            return
        for i, shard in enumerate(shards):
            assert shard.journal is not None
            j = (i + 1) % len(shards)
            epoch = f"{tokens[i]}.{tokens[j]}"  # a new ring after either one is emptied
            old = shard.journal.sync(epoch, found[j].get(self._keys.journals(shard.name)))
            if old is None:
                shard.rejournal(now, wall)
            elif audit is not None:
                shard.journal.audit(old, shard.client, now, again=audit)

    def _epoch(self, shard: Shard, seen: dict[str, bytes], wall: float) -> str:
        """The server's epoch token, made when it has none."""
        raw = seen.get(self._keys.epoch)
        if raw is None:
            fresh = encode({"token": secrets.token_hex(8), "created": wall})
            made = shard.client.add(self._keys.epoch, fresh)
            raw = fresh if made else shard.client.get(self._keys.epoch) or fresh
        epoch = decode_or_none(raw)
        if not isinstance(epoch, dict) or not isinstance(epoch.get("token"), str):
            # Written over by something else: a token of its own, so a change shows.
            return "x" + hashlib.sha256(raw).hexdigest()[:15]
        created = epoch.get("created")
        if isinstance(created, (int, float)) and not isinstance(created, bool):
            shard.created = min(created, shard.created or created)
        return epoch["token"]

    def _watch_alone(self, shard: Shard, seen: dict[str, bytes], token: str, wall: float) -> None:
        """One server: a restart seen by this client is reported with the count it last saw."""
        live = seen.get(self._keys.live)
        known = self._epochs.get(shard.name)
        self._epochs[shard.name] = token
        if known is not None and known != token:
            if shard.client.add(self._keys.wipe(shard.name, known), b"1"):
                if live is not None or shard.last_live == 0:
                    # Either the count was rebuilt since by another client, or this
                    # client last saw an empty queue: the number is unknown, but
                    # the loss is still told.
                    count, what = 1, "an unknown number of queued messages"
                else:
                    count, what = shard.last_live, f"{shard.last_live} queued message(s)"
                shard.ledger.report_count(
                    f"unknown-{known}",
                    count,
                    f"memcached {shard.name} was emptied (restart, flush_all or eviction of"
                    f" the namespace marker): {what} lost with their ids",
                    wall,
                )
            shard.last_live = 0
        shard.last_live = as_int(live, shard.last_live)

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

    def _by_home(self, records: Iterable[Record]) -> dict[Shard, list[Record]]:
        groups: dict[Shard, list[Record]] = {}
        seen: set[str] = set()
        for record in records:
            if record.id not in seen:
                seen.add(record.id)
                groups.setdefault(self._home(record.id), []).append(record)
        return groups

    def enqueue(self, records: Sequence[Record]) -> None:
        self._check_sizes(records)
        wall = time.time()
        self._check(wall, wall, audit=None)
        undo = []
        try:
            for shard, group in self._by_home(records).items():
                undo.append(shard.enqueue(group, wall))
        except StoreError:
            for done in undo:
                done()
            raise

    # -- claims ----------------------------------------------------------------

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        wall = time.time()
        self._check(wall, now, audit=False)
        claims: list[tuple[Any, Claim]] = []
        taken: dict[Shard, list[tuple[Entry, dict[str, Any], str]]] = {}
        try:
            for _ in range(ROUNDS):  # more rounds only when other claimers took our picks
                wanted = limit - len(claims)
                found = [
                    (shard, entry)
                    for shard in self._shards
                    for entry in shard.scan.queued(now, wall, enough=wanted)
                    if entry.claimable(now)
                ]
                found.sort(key=lambda pair: pair[1].order)
                round_taken: dict[Shard, list[tuple[Entry, dict[str, Any], str]]] = {}
                raced = False
                for shard, entry in found:
                    if sum(map(len, round_taken.values())) == wanted:
                        break
                    got = shard.take(entry, now, lease)
                    if got is None:
                        raced = True
                    else:
                        round_taken.setdefault(shard, []).append((entry, *got))
                        taken.setdefault(shard, []).append((entry, *got))
                for shard, items in round_taken.items():
                    claims.extend(shard.with_data(items, now))
                if len(claims) >= limit or not raced:
                    break
        except StoreError:
            for shard, items in taken.items():
                shard.release_taken(items)
            raise
        return [claim for _, claim in sorted(claims, key=lambda t: t[0])]

    def ack(self, claim: Claim) -> None:
        self._home(claim.id).ack(claim)

    def release(self, claim: Claim) -> None:
        self._home(claim.id).release(claim)

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        self._home(claim.id).requeue(claim, due, error, time.time())

    # -- dead letters ------------------------------------------------------------

    def bury(self, claim: Claim, error: str, now: float) -> None:
        self._home(claim.id).bury(claim, error, now)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        self._check_sizes(records)
        self._check(time.time(), now, audit=None)
        for shard, group in self._by_home(records).items():
            shard.add_dead(group, now)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        now = time.time()
        self._check(now, now, audit=True)
        letters: list[tuple[float, int, DeadLetter]] = []
        for shard in self._shards:
            for _, report in shard.ledger.entries():
                record = Record(
                    id=report["id"],
                    data=b"",
                    created=report.get("created") or report["detected"],
                    due=report.get("due") or report["detected"],
                    attempts=report.get("attempts") or 0,
                    last_error=report.get("err"),
                )
                letter = DeadLetter(record, report["reason"], report["detected"], lost=True)
                letters.append((report["detected"], 0, letter))
            for buried, letter in shard.dead.letters(limit, now):
                letters.append((buried, 1, letter))
        letters.sort(key=lambda t: (t[0], t[1]))
        return [letter for _, _, letter in letters][:limit]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        wanted = None if ids is None else list(ids)
        wall = time.time()
        return sum(shard.dead.revive(wanted, now, wall) for shard in self._shards)

    def purge(self, buried_before: float) -> int:
        return sum(
            shard.dead.purge(buried_before) + shard.ledger.purge(buried_before)
            for shard in self._shards
        )

    # -- counts ------------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        wall = time.time()
        self._check(wall, now, audit=True)
        ready = scheduled = in_flight = stuck = dead = 0
        oldest: float | None = None
        for shard in self._shards:
            for entry in shard.scan.queued(now, wall):
                h = entry.header
                if shard.lose_unread(entry, now):
                    continue
                if entry.broken:
                    ready += 1  # claimable at once, for burial
                elif h["tok"] is not None:
                    if h["exp"] > now:
                        in_flight += 1
                    else:
                        stuck += 1
                elif h["due"] > now:
                    scheduled += 1
                else:
                    ready += 1
                    oldest = h["created"] if oldest is None else min(oldest, h["created"])
            dead += shard.dead.count(now)
        return Stats.counted(
            now,
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            lost=sum(shard.ledger.total() for shard in self._shards),
            oldest_created=oldest,
            stuck=stuck,
        )

    def close(self) -> None:
        for shard in self._shards:
            shard.client.close()

    def __repr__(self) -> str:
        servers = ",".join(shard.name for shard in self._shards)
        return f"<MemcachedStore {servers} namespace={self.namespace!r}>"
