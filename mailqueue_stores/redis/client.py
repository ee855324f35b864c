"""What the Redis store asks of Redis: each queue operation as its script calls.

:class:`RedisClient` lays out the KEYS and ARGV of the scripts in
:mod:`mailqueue_stores.redis.scripts` and :mod:`mailqueue_stores.redis.limits`
(declaring every key a script touches, but the claim's) and returns what they
answer as Redis gives it; :class:`~mailqueue_stores.redis.RedisStore` reads
that into the contract's values. Every call goes through a
:class:`~mailqueue_stores.redis.connection.RedisConnection`, which translates
redis-py's errors.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mailqueue_core.errors import StoreError, StoreUnavailable
from mailqueue_core.store import Claim, Record, SentRecord
from mailqueue_core.text import get_logger
from mailqueue_stores.redis.connection import RedisConnection, ReplicasMissing
from mailqueue_stores.redis.keys import RedisKeys
from mailqueue_stores.redis.sentlog import FIELDS, fields_of, member, ttl_ms
from mailqueue_stores.redis.settings import RedisSettings
from mailqueue_stores.redis.wakeups import MARGIN, SLICE, WakeUps

__all__ = ["DEAD_FIELDS", "LOST_FIELDS", "RedisClient"]

log = get_logger("mailqueue.stores.redis")

#: How many old messages ``stats`` looks at to find the oldest ready one.
AGE_WALK = 1000
#: Ids per script call for revive and purge, so one call never blocks Redis long.
CHUNK = 500
#: The fields of a dead letter and of a loss report, in the order rows carry them.
DEAD_FIELDS = ("data", "created", "due", "attempts", "last_error", "reason")
LOST_FIELDS = ("created", "due", "reason")

Row = list[Any]


class RedisClient:
    """One namespace's queue in Redis, over one connection."""

    def __init__(self, settings: RedisSettings, namespace: str) -> None:
        self.settings = settings
        self.namespace = namespace
        self.keys = RedisKeys(namespace)
        self.connection = RedisConnection(settings)
        #: The wake-ups, waited for on a connection of their own.
        waiting = RedisConnection(settings, read_timeout=SLICE + MARGIN)
        self.wakeups = WakeUps(waiting, self.keys.wake)
        # Lua reads "inf" as infinity too, but a finite bound keeps the scripts' arithmetic plain.
        self._skew = repr(min(settings.options.max_clock_skew, 1e12))

    # -- the queue -------------------------------------------------------------

    def enqueue(self, records: Sequence[Record]) -> None:
        """Add records not already live or dead; with ``min_replicas``, confirmed by WAIT."""
        k = self.keys
        keys = [k.due, k.created, k.wake]
        args: list[Any] = []
        for record in records:
            keys += [k.live(record.id), k.dead_letter(record.id)]
            args += _record_args(record)
        replicas = self.settings.options.min_replicas
        if not replicas:
            self.connection.run("enqueue", keys, args)
            return
        try:
            self.connection.run_replicated("enqueue", keys, args, replicas)
        except ReplicasMissing as missing:
            self._withdraw([mid.decode() for mid in missing.answer])
            raise

    def _withdraw(self, ids: list[str]) -> None:
        """Take back what an enqueue added that the replicas did not confirm.

        The caller is told the enqueue failed (and falls back); if the copy
        stayed, the message would be sent from here and from the fallback.
        A flusher that claimed it meanwhile keeps it.
        """
        if not ids:
            return
        k = self.keys
        try:
            self.connection.run("withdraw", [k.due, k.created, *map(k.live, ids)], ids)
        except StoreError as exc:
            log.warning(
                "redis store (namespace %s): could not take back %d message(s) that no "
                "replica confirmed; they may be delivered twice: %s",
                self.namespace,
                len(ids),
                exc,
            )

    def claim(self, now: float, limit: int, lease: float) -> tuple[list[Row], list[Row]]:
        """``(rows, troubles)`` as the claim script answers them (see ``CLAIM``);
        the newest wake-up it saw goes to :attr:`wakeups`."""
        k = self.keys
        rows, troubles, newest = self.connection.run(
            "claim",
            [k.due, k.held, k.created, k.dead, k.lost, k.wake],
            [
                k.live_prefix,
                k.dead_prefix,
                k.lost_prefix,
                repr(float(now)),
                limit,
                repr(now + lease),
                secrets.token_hex(12) + ":",
                repr(float(lease)),
                self._skew,
            ],
        )
        self.wakeups.saw(newest)
        return rows, troubles

    def ack(self, claim: Claim) -> bool:
        k = self.keys
        return self._settle("ack", claim, [k.due, k.held, k.created], [])

    def requeue(self, claim: Claim, due: float, error: str | None) -> bool:
        attempts = claim.record.attempts + 1
        extra = [repr(float(due)), attempts, *_optional(error)]
        return self._settle(
            "requeue", claim, [self.keys.due, self.keys.held, self.keys.wake], extra
        )

    def release(self, claim: Claim) -> bool:
        extra = [repr(float(claim.record.due))]
        return self._settle(
            "release", claim, [self.keys.due, self.keys.held, self.keys.wake], extra
        )

    def bury(self, claim: Claim, error: str, now: float) -> bool:
        k, r = self.keys, claim.record
        keys = [k.dead_letter(claim.id), k.due, k.held, k.created, k.dead]
        extra = [error, repr(float(now)), r.attempts + 1, repr(float(r.created)), repr(r.due)]
        return self._settle("bury", claim, keys, extra)

    def _settle(self, script: str, claim: Claim, keys: list[str], extra: list[Any]) -> bool:
        """Whether the claim still held its message (the scripts answer 0 when not)."""
        live = self.keys.live(claim.id)
        return bool(self.connection.run(script, [live, *keys], [claim.id, claim.token, *extra]))

    # -- dead letters ----------------------------------------------------------

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        k = self.keys
        args: list[Any] = [repr(float(now))]
        for record in records:
            args += _record_args(record)
        self.connection.run("add_dead", [k.dead, *(k.dead_letter(r.id) for r in records)], args)

    def dead_letters(self, stop: int) -> tuple[list[Row], list[Row]]:
        """Rows of the dead letters and of the loss reports, oldest first, to index ``stop``.

        Each row is ``[id, score, *fields]`` (:data:`DEAD_FIELDS` or
        :data:`LOST_FIELDS`; None where absent).
        """
        k = self.keys
        dead = self._read_letters(k.dead, k.dead_letter, DEAD_FIELDS, stop)
        lost = self._read_letters(k.lost, k.lost_letter, LOST_FIELDS, stop)
        return dead, lost

    def _read_letters(
        self, index: str, key: Callable[[str], str], fields: Sequence[str], stop: int
    ) -> list[Row]:
        ids = [mid.decode() for mid in self.connection.call("ZRANGE", index, 0, stop)]
        if not ids:
            return []
        rows: list[Row] = self.connection.run(
            "read_letters", [index, *map(key, ids)], [len(fields), *fields, *ids]
        )
        return rows

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        """Give dead letters back to the queue (all of them for None), in chunks."""
        k = self.keys
        if ids is None:
            chosen = [m.decode() for m in self.connection.call("ZRANGE", k.dead, 0, -1)]
        else:
            chosen = list(ids)
        revived = 0
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start : start + CHUNK]
            keys = [k.due, k.held, k.created, k.dead, k.wake]
            for mid in chunk:
                keys += [k.live(mid), k.dead_letter(mid)]
            revived += self.connection.run("revive", keys, [repr(float(now)), *chunk])
        return int(revived)

    def purge(self, buried_before: float) -> int:
        """Delete dead letters and loss reports from before ``buried_before``, in chunks."""
        k = self.keys
        before = repr(float(buried_before))
        total = 0
        for index, key in ((k.dead, k.dead_letter), (k.lost, k.lost_letter)):
            while True:
                found = self.connection.call(
                    "ZRANGEBYSCORE", index, "-inf", f"({before}", "LIMIT", 0, CHUNK
                )
                ids = [mid.decode() for mid in found]
                if ids:
                    total += self.connection.run("purge", [index, *map(key, ids)], [before, *ids])
                if len(ids) < CHUNK:
                    break
        return total

    # -- the console -------------------------------------------------------------

    def walk(
        self,
        indexes: Sequence[str],
        window: str,
        now: float,
        *,
        reverse: bool,
        want: int,
        cap: int,
        skip_held: bool,
        after: tuple[float, str] | None,
        ties_to_come: Sequence[bool],
    ) -> list[Row]:
        """Per index ``[found, stopped]`` as the walk script answers them (see ``WALK``)."""
        score, mid = ("", "") if after is None else (repr(float(after[0])), after[1])
        args: list[Any] = [window, repr(float(now)), int(reverse), want, cap, int(skip_held)]
        args += [score, mid, *(int(tie) for tie in ties_to_come)]
        answer: list[Row] = self.connection.run("walk", [self.keys.held, *indexes], args)
        return answer

    def read_records(self, wanted: Sequence[tuple[str, str]]) -> list[Row]:
        """Rows of the records ``(id, where)`` names (see ``READ_RECORDS``)."""
        k = self.keys
        keys = [k.due, k.held, k.created, k.dead, k.lost]
        args: list[str] = []
        for mid, where in wanted:
            if where in ("q", "*"):
                keys.append(k.live(mid))
            if where in ("d", "*"):
                keys.append(k.dead_letter(mid))
            if where in ("l", "*"):
                keys.append(k.lost_letter(mid))
            args += [mid, where]
        rows: list[Row] = self.connection.run("read_records", keys, args)
        return rows

    def delete(self, ids: Sequence[str], now: float) -> int:
        k = self.keys
        deleted = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            keys = [k.due, k.held, k.created, k.dead, k.lost]
            for mid in chunk:
                keys += [k.live(mid), k.dead_letter(mid), k.lost_letter(mid)]
            deleted += self.connection.run("delete", keys, [repr(float(now)), self._skew, *chunk])
        return int(deleted)

    def send_now(self, ids: Sequence[str], now: float) -> int:
        k = self.keys
        changed = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            keys = [k.due, k.held, k.wake, *map(k.live, chunk)]
            changed += self.connection.run("send_now", keys, [repr(float(now)), *chunk])
        return int(changed)

    def paused(self) -> bool:
        return bool(self.connection.call("EXISTS", self.keys.paused))

    def set_paused(self, paused: bool) -> None:
        """Set or clear the flag; with ``min_replicas``, confirmed by WAIT as enqueue is."""
        keys, args = [self.keys.paused, self.keys.wake], [int(paused)]
        replicas = self.settings.options.min_replicas
        if not replicas:
            self.connection.run("set_paused", keys, args)
            return
        try:
            self.connection.run_replicated("set_paused", keys, args, replicas)
        except ReplicasMissing as missing:
            done = "paused" if paused else "resumed"
            # Unlike an enqueue, nothing is taken back: the flag is idempotent, and
            # the operator, told, sets it again.
            raise StoreUnavailable(
                f"{missing}: delivery is {done} on the master, but a failover now could "
                "undo that; run the command again"
            ) from missing

    # -- heartbeats and the sent log ----------------------------------------------

    def beat(self, flusher: str, now: float, expires: float) -> None:
        k = self.keys
        args = [flusher, repr(float(now)), repr(float(expires)), ttl_ms(now, expires)]
        self.connection.run("beat", [k.beats, k.beats_until], args)

    def beats(self, now: float) -> list[bytes]:
        """``[name, last active, ...]`` of the notes that expire after ``now``."""
        k = self.keys
        answer: list[bytes] = self.connection.run(
            "beats", [k.beats, k.beats_until], [repr(float(now))]
        )
        return answer

    def log_sent(self, records: Sequence[SentRecord], expires: float) -> None:
        k = self.keys
        keys = [k.sent]
        args: list[Any] = []
        for record in records:
            name = member(record.sent, record.id)
            pairs = fields_of(record)
            keys.append(k.sent_record(name))
            args += [name, repr(record.sent + 0.0), ttl_ms(record.sent, expires), len(pairs) // 2]
            args += pairs
        self.connection.run("log_sent", keys, args)

    def walk_sent(
        self, after: tuple[float, str] | None, want: int, newest_first: bool
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``want`` (member, score) of ``sent`` from the member ``after`` on."""
        ((flat, _),) = self.walk(
            [self.keys.sent],
            "all",
            0.0,
            reverse=newest_first,
            want=want,
            cap=want,
            skip_held=False,
            after=after,
            ties_to_come=[False],
        )
        return list(zip(flat[::2], flat[1::2], strict=True))

    def read_sent(self, members: Sequence[bytes], need: int) -> list[Row]:
        """Rows of the logged records (see ``READ_SENT``), at most ``need``."""
        keys = [self.keys.sent, *(self.keys.sent_record(m.decode()) for m in members)]
        rows: list[Row] = self.connection.run(
            "read_sent", keys, [need, len(FIELDS), *FIELDS, *members]
        )
        return rows

    def count_sent(self, since: float) -> int:
        return int(self.connection.call("ZCOUNT", self.keys.sent, repr(float(since)), "+inf"))

    def prune_sent(self, sent_before: float) -> int:
        """Delete the log's records sent before ``sent_before``, in chunks."""
        k = self.keys
        before = repr(float(sent_before))
        total = 0
        while True:
            found = self.connection.call(
                "ZRANGEBYSCORE", k.sent, "-inf", f"({before}", "LIMIT", 0, CHUNK
            )
            names = [name.decode() for name in found]
            if names:
                keys = [k.sent, *map(k.sent_record, names)]
                total += self.connection.run("prune_sent", keys, [before, *names])
            if len(names) < CHUNK:
                return total

    # -- the rest --------------------------------------------------------------

    def stats(self, now: float) -> list[Any]:
        """``[ready, scheduled, in flight, stuck, dead, lost, oldest created or None]``."""
        k = self.keys
        expired = [
            mid.decode()
            for mid in self.connection.call("ZRANGEBYSCORE", k.held, "-inf", repr(float(now)))
        ]
        answer: list[Any] = self.connection.run(
            "stats",
            [k.due, k.held, k.created, k.dead, k.lost, *map(k.live, expired)],
            [repr(float(now)), AGE_WALK, self._skew, *expired],
        )
        return answer

    def memory_policies(self) -> dict[str, str | None]:
        return self.connection.memory_policies()

    def ping(self) -> None:
        self.connection.call("PING")

    def wait_for_mail(self, timeout: float) -> bool:
        return self.wakeups.wait(timeout)

    def close(self) -> None:
        try:
            self.wakeups.close()
        finally:
            self.connection.close()

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float:
        ttl_ms = math.ceil((burst / rate + 60) * 1000)
        wait = self.connection.run(
            "take_token",
            [self.keys.bucket(bucket)],
            [repr(float(rate)), repr(float(burst)), repr(float(now)), ttl_ms],
        )
        return float(wait)

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None:
        token = uuid.uuid4().hex
        got = self.connection.run(
            "acquire_slot",
            [self.keys.slots(name)],
            [repr(float(now)), limit, repr(float(now + lease)), token, math.ceil(lease * 1000)],
        )
        return None if got is None else token

    def release_slot(self, name: str, token: str) -> None:
        self.connection.run("release_slot", [self.keys.slots(name)], [token])


def _optional(text: str | None) -> list[str]:
    """A text that may be None, as the scripts take it: a has-it flag and the text."""
    return ["0", ""] if text is None else ["1", text]


def _record_args(record: Record) -> list[Any]:
    return [
        record.id,
        record.data,
        repr(float(record.created)),
        repr(float(record.due)),
        int(record.attempts),
        *_optional(record.last_error),
    ]
