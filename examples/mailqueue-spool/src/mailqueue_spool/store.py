"""Spool store: a queue in a directory on one machine, one file per message.

What it is
    An example of a third-party store, small enough to read in one sitting,
    that still keeps the whole contract between processes. Each message is
    one file; its state (waiting or claimed, due time, lease) is in the file
    *name*, so every change of state is one atomic ``os.rename`` and two
    processes can never both win the same message: the loser's rename finds
    the old name gone. Layout under the spool directory (``<namespace>``
    percent-encoded)::

        <namespace>/queue/   waiting and claimed messages (see mailqueue_spool.files)
        <namespace>/dead/    dead letters
        <namespace>/ids/     an empty file per id present, so enqueue keeps one copy

    New content is written to a hidden temporary file in the same directory,
    fsynced, then renamed into place. A claim renames ``w,<due>,...`` to
    ``c,<expires>,...,<token>``; ack, requeue, release and bury act on that
    exact name and raise ``LeaseLost`` when it is gone. An expired claim is
    simply claimable again: no reaper is needed.

    Cost, honestly: ``fetch_due`` and ``stats`` list the namespace's queue
    directory, so they cost O(messages queued), *including those not yet
    due*. The contract asks that a claim's cost not grow with the number of
    records that are not due; this store does not keep that promise. It is
    fine for thousands of queued messages, not for millions: use ``sqlite``
    or ``redis`` there. ``dead_letters``, ``revive`` and ``purge`` list the
    dead-letter directory likewise.

URL format
    ``spool:///var/spool/mailqueue``: an absolute directory, created on first
    use. Options may also be given in the query string
    (``spool:///var/spool/mailqueue?namespace=shop&fsync=false``); keyword
    options win over the query string.

Options
    Declared once in :class:`SpoolOptions` and read through mailqueue's own
    parser (:func:`mailqueue_core.options.read_options`), which lists the valid
    options when one is unknown. ``namespace`` is a sub-directory of its own.

Capabilities and what it can lose
    ``shared`` between the processes of one machine, on a local POSIX
    filesystem (not a network filesystem, not Windows, where ``os.rename``
    does not give these guarantees), and ``durable``: with ``fsync`` on, a
    message is on disk when ``enqueue`` returns. Files are created with mode
    0600: run the site and the flusher as the same user. Crash windows, all
    resolved towards sending twice rather than losing: a crash in the middle
    of ``requeue``, ``bury`` or ``revive`` leaves the message claimed for up
    to ten minutes after its lease (then it comes back, with the old or the
    new state); a crash in the middle of ``enqueue`` may leave part of the
    batch queued (the caller was not told it was, and retries); enqueueing
    the same id from two processes at the same instant may keep two copies.
    A crash may leave hidden ``.tmp-*`` files, which are safe to delete. A
    file that is not a spool file, found where a message was claimed, makes
    ``fetch_due`` raise ``StoreUnavailable`` naming it, until it is moved
    away. Losing the directory or the disk loses the queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from mailqueue_core.errors import ConfigurationError, LeaseLost, StoreUnavailable
from mailqueue_core.options import BOOLEAN, option, read_options, split_query
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_spool import files

__all__ = ["SpoolStore", "parse_location"]

# How long a half-done requeue, bury or revive keeps its message out of reach
# after the lease it came with: far longer than the two renames it takes, so
# only a crashed process's message ever comes back through it.
_GRACE = 600.0


@dataclasses.dataclass(frozen=True)
class SpoolOptions:
    """The spool store's options: one declaration for the parser, the errors and the docs."""

    fsync: bool = option(
        True,
        BOOLEAN,
        "fsync every file and directory change before returning; false is faster and still "
        "safe against a crash of any process, not against a power cut or an OS crash",
    )


def parse_location(location: str) -> tuple[str, dict[str, str]]:
    """The spool directory and the query options of a ``spool:///`` URL."""
    bare, query = split_query(location, "spool store")
    parts = urlsplit(bare)
    if parts.scheme != "spool":
        raise ConfigurationError(f"spool store URL must start with 'spool:///', got {location!r}")
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or not path.strip("/"):
        raise ConfigurationError(
            f"spool store URL {location!r} names no absolute directory: "
            "use spool:///abs/path/to/dir"
        )
    return os.path.normpath(path), query


class SpoolStore(Store):
    """A queue in a spool directory, one file per message (see the module docstring)."""

    capabilities = frozenset({Capability.SHARED, Capability.DURABLE})

    def __init__(self, location: str, **options: object) -> None:
        root, query = parse_location(location)
        namespace, declared = read_options(SpoolOptions, "spool store", query, options)
        super().__init__(location, namespace=namespace)
        self.root = root
        self.fsync = declared.fsync
        #: What it takes to build a twin of this store (besides location and namespace).
        self.options: dict[str, object] = {"fsync": declared.fsync}
        base = os.path.join(root, files.namespace_dir(self.namespace))
        self._queue = os.path.join(base, "queue")
        self._dead = os.path.join(base, "dead")
        self._ids = os.path.join(base, "ids")
        self._made = False

    def __repr__(self) -> str:
        return f"<SpoolStore root={self.root!r} namespace={self.namespace!r}>"

    # -- the one place where OSError becomes StoreUnavailable --------------------

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        try:
            if not self._made:
                for directory in (self._queue, self._dead, self._ids):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                self._made = True
            yield
        except OSError as exc:
            raise StoreUnavailable(f"spool store {self.root}: {exc}") from exc

    def _read(self, path: str) -> tuple[Record, dict[str, Any]]:
        try:
            return files.read(path)
        except ValueError as exc:
            raise StoreUnavailable(
                f"spool store {self.root}: {path} is not a readable spool file ({exc}); "
                "move it out of the spool directory"
            ) from exc

    def _claimed_record(self, path: str, entry: files.Entry) -> Record:
        """The record in a file just claimed; a damaged one says what is wrong.

        One unreadable file must not stop the queue: it is claimed like any
        other, and the flusher buries it with the reason.
        """
        try:
            record, _ = files.read(path)
        except ValueError as exc:
            return Record(
                id=entry.id,
                data=b"",
                created=entry.created,
                due=entry.at,
                damage=f"{os.path.basename(path)} is not a readable spool file ({exc})",
            )
        return record

    # -- listing and small helpers -------------------------------------------------

    def _q(self, name: str) -> str:
        return os.path.join(self._queue, name)

    def _entries(self) -> list[files.Entry]:
        parsed = (files.parse_queue_name(name) for name in os.listdir(self._queue))
        return [entry for entry in parsed if entry is not None]

    def _dead_entries(self) -> list[tuple[float, str, str, str]]:
        """(burial time, stamp, id, file name) of every dead letter, oldest burial first."""
        found = []
        for name in os.listdir(self._dead):
            parsed = files.parse_dead_name(name)
            if parsed is not None:
                found.append((*parsed, name))
        return sorted(found)

    def _sync(self, *directories: str) -> None:
        if self.fsync:
            for directory in dict.fromkeys(directories):
                files.sync_dir(directory)

    def _marker(self, mid: str) -> str:
        return os.path.join(self._ids, files.encode_id(mid))

    def _reserve(self, mid: str) -> bool:
        """Take ``mid`` for a new message; False when a message with that id is present."""
        try:
            os.close(os.open(self._marker(mid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            # A crash between reserving and placing leaves a marker with no
            # message: take it over rather than refuse the id for ever.
            return not self._present(mid)
        return True

    def _present(self, mid: str) -> bool:
        return any(e.id == mid for e in self._entries()) or any(
            dead_id == mid for _, _, dead_id, _ in self._dead_entries()
        )

    def _unreserve(self, mid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._marker(mid))

    def _held(self, claim: Claim) -> str:
        return self._q(
            files.claimed_name(claim.expires, claim.token, claim.record.created, claim.id)
        )

    @staticmethod
    def _lost(claim: Claim) -> LeaseLost:
        return LeaseLost(f"message {claim.id} is no longer held by this claim")

    def _place(
        self,
        records: Sequence[Record],
        directory: str,
        name_of: Callable[[Record], str],
        fields_of: Callable[[Record], dict[str, Any]],
    ) -> None:
        """Write new messages into ``directory``: all of them, or none when it raises."""
        batch: dict[str, tuple[Record, str]] = {}
        for record in records:
            if record.id not in batch:  # the first copy of an id wins
                batch[record.id] = (record, name_of(record))
        temps: list[str] = []
        reserved: list[str] = []
        placed: list[str] = []
        try:
            for record, _ in batch.values():
                temps.append(
                    files.write_temp(directory, fields_of(record), record.data, fsync=self.fsync)
                )
            for (record, name), temp in zip(batch.values(), temps, strict=True):
                if not self._reserve(record.id):
                    os.unlink(temp)
                    continue
                reserved.append(record.id)
                os.rename(temp, os.path.join(directory, name))
                placed.append(os.path.join(directory, name))
            self._sync(directory)
        except BaseException:
            for path in placed + temps:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            for mid in reserved:
                with contextlib.suppress(OSError):
                    self._unreserve(mid)
            raise

    def _rewrite(
        self, source: str, record: Record, fields: dict[str, Any], hold: float, target: str
    ) -> bool:
        """Replace the message file ``source`` by ``target`` with new content.

        The message is first taken: renamed to a claim whose token no one else
        knows and which expires ``_GRACE`` after ``hold``, so no other process
        touches it while the new content goes in under that name and is
        renamed to ``target``. A crash in between leaves that claim, which
        comes back by itself. False when ``source`` is gone (someone else won).
        """
        temp = files.write_temp(self._queue, fields, record.data, fsync=self.fsync)
        take = self._q(
            files.claimed_name(hold + _GRACE, files.new_token(), record.created, record.id)
        )
        try:
            os.rename(source, take)
        except FileNotFoundError:
            os.unlink(temp)
            return False
        os.replace(temp, take)
        os.rename(take, target)
        self._sync(self._queue, os.path.dirname(source), os.path.dirname(target))
        return True

    # -- the contract -------------------------------------------------------------

    def enqueue(self, records: Sequence[Record]) -> None:
        with self._io():
            self._place(
                records,
                self._queue,
                lambda r: files.waiting_name(r.due, r.created, r.id),
                files.header,
            )

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        claims: list[Claim] = []
        if limit <= 0:
            return claims
        expires = now + lease
        with self._io():
            due = sorted(
                (e for e in self._entries() if e.at <= now), key=lambda e: (e.at, e.order)
            )
            for entry in due:
                if len(claims) == limit:
                    break
                token = files.new_token()
                path = self._q(files.claimed_name(expires, token, entry.created, entry.id))
                try:
                    os.rename(self._q(entry.name), path)
                except FileNotFoundError:
                    continue  # another claimer renamed it first: it is theirs
                claims.append(Claim(self._claimed_record(path, entry), token, expires))
        return claims

    def ack(self, claim: Claim) -> None:
        with self._io():
            try:
                os.unlink(self._held(claim))
            except FileNotFoundError:
                raise self._lost(claim) from None
            self._unreserve(claim.id)
            self._sync(self._queue)

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        record = dataclasses.replace(
            claim.record, due=due, attempts=claim.record.attempts + 1, last_error=error
        )
        target = self._q(files.waiting_name(due, record.created, record.id))
        with self._io():
            if not self._rewrite(
                self._held(claim), record, files.header(record), max(claim.expires, due), target
            ):
                raise self._lost(claim)

    def release(self, claim: Claim) -> None:
        waiting = files.waiting_name(claim.record.due, claim.record.created, claim.id)
        with self._io():
            try:
                os.rename(self._held(claim), self._q(waiting))
            except FileNotFoundError:
                raise self._lost(claim) from None
            self._sync(self._queue)

    def bury(self, claim: Claim, error: str, now: float) -> None:
        record = dataclasses.replace(
            claim.record, last_error=error, attempts=claim.record.attempts + 1, damage=None
        )
        fields = files.header(record, reason=error, buried=float(now))
        target = os.path.join(self._dead, files.dead_name(now, claim.id))
        with self._io():
            if not self._rewrite(
                self._held(claim), record, fields, max(claim.expires, now), target
            ):
                raise self._lost(claim)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        with self._io():
            self._place(
                records,
                self._dead,
                lambda r: files.dead_name(now, r.id),
                lambda r: files.header(r, reason=r.last_error or "", buried=float(now)),
            )

    def stats(self, now: float) -> Stats:
        with self._io():
            entries = self._entries()
            dead = len(self._dead_entries())
        ready = scheduled = in_flight = stuck = 0
        oldest: float | None = None
        for entry in entries:
            if entry.claimed:
                if entry.at > now:
                    in_flight += 1
                else:
                    stuck += 1
            elif entry.at > now:
                scheduled += 1
            else:
                ready += 1
                oldest = entry.created if oldest is None else min(oldest, entry.created)
        return Stats(
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
            stuck=stuck,
        )

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        with self._io():
            for buried, _, _, name in self._dead_entries():
                if limit is not None and len(letters) >= limit:
                    break
                try:
                    record, fields = self._read(os.path.join(self._dead, name))
                except FileNotFoundError:
                    continue  # revived or purged by another process meanwhile
                letters.append(DeadLetter(record, str(fields.get("reason", "")), buried))
        return letters

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        wanted = None if ids is None else set(ids)
        revived = 0
        with self._io():
            for _, _, mid, name in self._dead_entries():
                if wanted is not None and mid not in wanted:
                    continue
                source = os.path.join(self._dead, name)
                try:
                    letter, _ = self._read(source)
                except FileNotFoundError:
                    continue
                record = dataclasses.replace(letter, due=now, created=now, attempts=0)
                target = self._q(files.waiting_name(now, now, mid))
                if self._rewrite(source, record, files.header(record), now, target):
                    revived += 1
        return revived

    def purge(self, buried_before: float) -> int:
        purged = 0
        with self._io():
            for buried, _, mid, name in self._dead_entries():
                if buried >= buried_before:
                    break
                try:
                    os.unlink(os.path.join(self._dead, name))
                except FileNotFoundError:
                    continue
                self._unreserve(mid)
                purged += 1
            if purged:
                self._sync(self._dead)
        return purged
