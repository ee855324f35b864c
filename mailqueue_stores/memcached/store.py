"""The memcached store: the contract, kept over one shard per server (see the package)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from mailqueue_core.errors import MessageTooLarge, StoreError
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.epochs import EpochWatch
from mailqueue_stores.memcached.headers import QueuedHeader, State
from mailqueue_stores.memcached.journal import Journal
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.options import DEFAULT_MAX_ITEM_SIZE, read
from mailqueue_stores.memcached.scanner import Entry, claim_order
from mailqueue_stores.memcached.shard import Shard, Taken

#: Rounds of claiming in one ``fetch_due`` when other flushers took our picks.
ROUNDS = 4


class MemcachedStore(Store):
    capabilities = frozenset({Capability.SHARED, Capability.MAY_LOSE})
    max_record_size: ClassVar[int | None] = DEFAULT_MAX_ITEM_SIZE

    def __init__(self, location: str = "memcached://", **options: Any) -> None:
        settings = read(location, options)
        super().__init__(location, namespace=settings.namespace)
        #: What it takes to build a twin of this store (besides location and namespace).
        self.options = {k: v for k, v in options.items() if k != "namespace"}
        self._max_item_size = settings.options.max_item_size
        # Store declares the limit per class; here it is per store (max_item_size).
        self.max_record_size = self._max_item_size  # type: ignore[misc]
        self._keys = Keys(self.namespace)
        clients = [
            MemcachedClient(
                host,
                port,
                connect_timeout=settings.options.connect_timeout,
                timeout=settings.options.timeout,
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
        self._epochs = EpochWatch(self._shards, self._keys)
        #: The latest ``now`` a caller gave this store, for the calls that take none.
        self._latest: float | None = None

    def _home(self, mid: str) -> Shard:
        return self._by_name[self._hasher.get_node(mid)]

    # -- time: always the caller's ------------------------------------------------------

    def _at(self, now: float) -> float:
        """Note the time a caller gave; the store never reads a clock of its own."""
        if self._latest is None or now > self._latest:
            self._latest = now
        return now

    def _since(self, *times: float | None) -> float:
        """The latest of ``times`` and of the times callers gave this store."""
        return max(t for t in (*times, self._latest) if t is not None)

    # -- enqueue -------------------------------------------------------------------------

    def _check_sizes(self, records: Sequence[Record]) -> None:
        for record in records:
            if len(record.data) > self._max_item_size:
                raise MessageTooLarge(
                    f"message {record.id} is {len(record.data)} bytes; this memcached store"
                    f" holds at most {self._max_item_size} bytes per message. Start memcached"
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
        """Add ``records``; each is written at the time it was created (the caller's clock).

        No write is indexed before the latest time this store was given, nor
        behind the servers' low cursors: a record moved in from a fallback store
        long after it was created is indexed as of now.
        """
        self._check_sizes(records)
        if not records:
            return
        now = self._since(min(r.created for r in records))
        now = self._since(now, self._epochs.check(now, audit=None))
        undo = []
        try:
            for shard, group in self._by_home(records).items():
                undo.append(shard.enqueue(group, now))
        except StoreError:
            for done in undo:
                done()
            raise

    # -- claims ----------------------------------------------------------------------------

    def _claim_round(
        self, now: float, wanted: int, lease: float
    ) -> tuple[list[tuple[Shard, Taken]], bool]:
        """Claim up to ``wanted`` due entries in due order; whether another client won a race."""
        found = [
            (shard, entry)
            for shard in self._shards
            for entry in shard.scan.queued(now, enough=wanted)
            if entry.header.claimable(now)
        ]
        found.sort(key=lambda pair: claim_order(pair[1]))
        taken: list[tuple[Shard, Taken]] = []
        raced = False
        for shard, entry in found:
            if len(taken) == wanted:
                break
            got = shard.take(entry, now, lease)
            raced = raced or got is None
            if got is not None:
                taken.append((shard, got))
        return taken, raced

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        self._epochs.check(self._at(now), audit=False)
        claims: list[tuple[Any, Claim]] = []
        taken: list[tuple[Shard, Taken]] = []
        try:
            for _ in range(ROUNDS):  # more rounds only when other claimers took our picks
                got, raced = self._claim_round(now, limit - len(claims), lease)
                taken += got
                for shard, mine in _by_shard(got).items():
                    claims.extend(shard.with_data(mine, now))
                if len(claims) >= limit or not raced:
                    break
        except StoreError:
            for shard, mine in _by_shard(taken).items():
                shard.release_taken(mine)
            raise
        return [claim for _, claim in sorted(claims, key=lambda t: t[0])]

    def ack(self, claim: Claim) -> None:
        self._home(claim.id).ack(claim)

    def release(self, claim: Claim) -> None:
        self._home(claim.id).release(claim)

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        """Back at ``due``, written as of the latest time this store was given."""
        self._home(claim.id).requeue(claim, due, error, self._since(due))

    # -- dead letters ------------------------------------------------------------------------

    def bury(self, claim: Claim, error: str, now: float) -> None:
        self._home(claim.id).bury(claim, error, self._at(now))

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        self._check_sizes(records)
        self._epochs.check(self._at(now), audit=None)
        for shard, group in self._by_home(records).items():
            shard.add_dead(group, now)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters and loss reports, stamped as of the latest time this store was given.

        A store never given one (``mailqueue dead`` in a fresh process) asks a
        server for its clock, to stamp the losses it finds; that time is never
        written where the store's cursors depend on it.
        """
        now = self._latest
        if now is None:
            now = self._shards[0].client.clock()
            self._epochs.check(now, audit=True, from_caller=False)
        else:
            self._epochs.check(now, audit=True)
        letters: list[tuple[float, int, DeadLetter]] = []
        for shard in self._shards:
            letters += [(r.detected, 0, r.letter()) for _, r in shard.ledger.entries()]
            letters += [(d.buried, 1, d) for d in shard.dead.letters(limit, now)]
        letters.sort(key=lambda t: (t[0], t[1]))
        return [letter for _, _, letter in letters][:limit]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        wanted = None if ids is None else list(ids)
        return sum(shard.dead.revive(wanted, self._at(now)) for shard in self._shards)

    def purge(self, buried_before: float) -> int:
        now = self._since(buried_before)
        return sum(
            shard.dead.purge(buried_before, now) + shard.ledger.purge(buried_before)
            for shard in self._shards
        )

    # -- counts ---------------------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        self._epochs.check(self._at(now), audit=True)
        counts = dict.fromkeys(State, 0)
        oldest: float | None = None
        dead = 0
        for shard in self._shards:
            for entry in shard.scan.queued(now):
                if shard.lose_unread(entry, now):
                    continue
                state = entry.header.state(now)
                counts[state] += 1
                if state is State.READY and not entry.header.broken:
                    oldest = _earliest(oldest, entry)
            dead += shard.dead.count(now)
        return Stats.counted(
            now,
            ready=counts[State.READY],
            scheduled=counts[State.SCHEDULED],
            in_flight=counts[State.IN_FLIGHT],
            dead=dead,
            lost=sum(shard.ledger.total() for shard in self._shards),
            oldest_created=oldest,
            stuck=counts[State.STUCK],
        )

    def close(self) -> None:
        for shard in self._shards:
            shard.client.close()

    def __repr__(self) -> str:
        servers = ",".join(shard.name for shard in self._shards)
        return f"<MemcachedStore {servers} namespace={self.namespace!r}>"


def _by_shard(taken: list[tuple[Shard, Taken]]) -> dict[Shard, list[Taken]]:
    grouped: dict[Shard, list[Taken]] = {}
    for shard, one in taken:
        grouped.setdefault(shard, []).append(one)
    return grouped


def _earliest(oldest: float | None, entry: Entry[QueuedHeader]) -> float:
    created = entry.header.created
    return created if oldest is None else min(oldest, created)
