"""The store contract: what every queue store, bundled or third-party, promises.

A store keeps :class:`Record` objects. The record's ``data`` is the encoded
message (see :mod:`mailqueue_core.codec`); it is opaque to the store, which
never decodes it. Beside it the store keeps the delivery state: due time,
attempts, last error, and the claim that holds it, if any.

Time is always passed in (``now``), never read by the store from its own clock,
so that leases and backoff can be tested on an injected clock. Flushers on
several machines therefore need their clocks in sync (NTP).

Every store is built as ``StoreClass(location, **options)`` and MUST accept the
option ``namespace`` (default ``"default"``): stores with different namespaces
on the same server MUST never see, count, claim or purge each other's records.
Unknown options MUST raise :class:`~mailqueue_core.errors.ConfigurationError`.

The contract is proved by :class:`mailqueue_core.testing.StoreContract`.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

__all__ = [
    "Capability",
    "Claim",
    "DeadLetter",
    "Entry",
    "Page",
    "Record",
    "SentRecord",
    "State",
    "Stats",
    "Store",
]


class Capability(str, enum.Enum):
    """What a store can do, declared in :attr:`Store.capabilities`.

    The engine, the system checks and the contract tests read these, never a
    store's name, so a third-party store is treated as what it declares. Each
    member is equal to its string value, so ``"shared" in store.capabilities``
    also works.
    """

    SHARED = "shared"
    """Several processes and machines see one queue: a flusher in another
    process (cron, a service) sees what a web process queued. The flusher
    overlaps each ack (a round trip) with rendering the next message. Without
    it the system check warns (``mailqueue.W001``)."""
    DURABLE = "durable"
    """Queued mail survives a restart of the processes and of the server.
    Without it the system check warns (``mailqueue.W001`` or ``W006``)."""
    MAY_LOSE = "may_lose"
    """The store can lose a record by design (memcached evicts) and reports
    each loss (``Stats.lost``, ``dead_letters(lost=True)``); the check says so."""
    RATE_LIMIT = "rate_limit"
    """Keeps shared token buckets and connection slots (the three rate-limit
    methods); without it each flusher limits itself, with a warning."""
    LOCAL = "local"
    """Lives on this machine (a file, the process's memory): :meth:`Store.verify`
    touches no network, so ``manage.py check`` runs it at every start (a
    store that cannot be opened is an error before the first ``send_mail``).
    A network store's ``verify`` runs under ``check --deploy`` only."""
    BROWSE = "browse"
    """Lists the records of each state a page at a time and acts on single
    records: :meth:`Store.browse`, :meth:`Store.get`, :meth:`Store.delete`
    and :meth:`Store.send_now` (the operator's console and the ``list``,
    ``show``, ``send-now`` and ``delete`` commands)."""
    PAUSE = "pause"
    """Keeps a pause flag for the namespace, seen by every flusher
    (:meth:`Store.paused`, :meth:`Store.set_paused`)."""
    WAKE = "wake"
    """Wakes a waiting flusher when mail becomes due (:meth:`Store.wait_for_mail`),
    so that ``flush --loop`` sends a new message within milliseconds instead of
    at its next poll. Without it the flusher polls every ``--interval``."""
    HEARTBEAT = "heartbeat"
    """Keeps when each flusher was last seen (:meth:`Store.beat`,
    :meth:`Store.beats`), for the console's overview."""
    SENT_LOG = "sent_log"
    """Keeps a record of delivered mail for a set time (``SENT_LOG``):
    :meth:`Store.log_sent`, :meth:`Store.sent_log`, :meth:`Store.count_sent`
    and :meth:`Store.prune_sent`."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One queued message as a store sees it."""

    id: str
    data: bytes
    created: float
    due: float
    attempts: int = 0
    last_error: str | None = None
    damage: str | None = None
    """Set on a record the store could not read whole (a field missing or of
    the wrong type), claimed, listed or dead: what is wrong with it. The fields that could be read
    are filled in, the rest hold placeholders (``data`` is then ``b""``). The
    flusher buries such a claim with this reason; it never tries to send it."""

    @property
    def size(self) -> int:
        return len(self.data)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A lease on one record, returned by :meth:`Store.fetch_due`.

    ``token`` identifies this claim; a later claim on the same record has
    another token. ``expires`` is when the lease runs out (same clock as ``now``).
    """

    record: Record
    token: str
    expires: float

    @property
    def id(self) -> str:
        return self.record.id


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that will not be delivered unless someone revives it."""

    record: Record
    reason: str
    buried: float
    lost: bool = False
    """True for a message the store knows existed but can no longer read
    (a memcached eviction): ``record.data`` is then empty."""


class State(str, enum.Enum):
    """Where a record is, as :meth:`Store.browse` lists it."""

    READY = "ready"
    """Due now and not held by a claim."""
    SCHEDULED = "scheduled"
    """Waiting for a later due time (a retry's backoff, a send time)."""
    IN_FLIGHT = "in-flight"
    """Held by a claim whose lease has not expired."""
    STUCK = "stuck"
    """Held by a claim whose lease expired: its flusher died or hung."""
    DEAD = "dead"
    """A dead letter, lost ones included."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One record as the console sees it: the record, its state, and the
    times that state has.

    For a queued record, ``record.due`` is its due time (for a claimed one,
    the due time it had before the claim) and ``expires`` the claim's lease
    expiry (None when not claimed). For a dead letter, ``buried`` and
    ``reason`` are set, and ``lost`` says that only what the store's indexes
    knew is left (``record.data`` is then ``b""``).
    """

    record: Record
    state: State
    expires: float | None = None
    buried: float | None = None
    reason: str | None = None
    lost: bool = False

    @property
    def id(self) -> str:
        return self.record.id


@dataclasses.dataclass(frozen=True)
class SentRecord:
    """One delivered message in the sent log (capability ``sent_log``).

    What the flusher knew when the transport accepted it: never the body,
    unless ``SENT_LOG["BODY"]`` asks for it (``data`` is then the encoded
    message, else ``b""``).
    """

    id: str
    """The queue's id of the message (a split-off part has an id of its own)."""
    sent: float
    recipients: tuple[str, ...]
    """The envelope recipients the transport accepted."""
    subject: str = ""
    message_id: str | None = None
    """The Message-ID header, as a provider's bounce webhook quotes it."""
    transport: str = ""
    provider_id: str | None = None
    attempts: int = 1
    """Attempts it took, this one included."""
    created: float = 0.0
    data: bytes = b""


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """A page of :meth:`Store.browse` (entries) or :meth:`Store.sent_log`
    (sent records), and the cursor that asks for the next page (None when
    this page is the last)."""

    entries: list[T]
    cursor: str | None = None


@dataclasses.dataclass(frozen=True)
class Stats:
    ready: int = 0
    """Due now and not held by a live lease."""
    scheduled: int = 0
    """Waiting for a later due time."""
    in_flight: int = 0
    """Held by a lease that has not expired."""
    dead: int = 0
    lost: int = 0
    """Known to have existed but gone from the store (an eviction, a record
    deleted behind the store's back); listed by :meth:`Store.dead_letters`."""
    oldest_ready_age: float | None = None
    """Seconds since the oldest ready message was created; None when none is ready."""
    stuck: int = 0
    """Held by a lease that has expired: the flusher holding it died or hung,
    and no flusher has claimed it again since. Counted neither ready nor in flight."""
    next_due: float | None = None
    """When the earliest scheduled message is due (the clock of ``now``); None
    when none is scheduled, or when the store does not tell (optional)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def counted(
        cls,
        now: float,
        *,
        ready: int,
        scheduled: int,
        in_flight: int,
        dead: int,
        lost: int = 0,
        oldest_created: float | None = None,
        stuck: int = 0,
        next_due: float | None = None,
    ) -> Stats:
        """Stats from counts and the created time of the oldest ready message."""
        age = None if oldest_created is None else max(0.0, now - oldest_created)
        return cls(ready, scheduled, in_flight, dead, lost, age, stuck, next_due)


class Store(abc.ABC):
    """A queue store. Subclasses MUST keep every promise written below.

    Calls that cannot reach the store MUST raise
    :class:`~mailqueue_core.errors.StoreUnavailable` (chaining the cause), never
    the client library's own exceptions, and MUST leave the store unchanged
    when they raise.
    """

    #: What the store can do (see :class:`Capability`); the contract tests skip
    #: by capability, never by name.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    #: The largest record ``data`` this store can hold, or None.
    max_record_size: ClassVar[int | None] = None

    def __init__(self, location: str = "", *, namespace: str = "default") -> None:
        if not isinstance(namespace, str) or not namespace:
            from mailqueue_core.errors import ConfigurationError

            raise ConfigurationError(f"namespace must be a non-empty string, got {namespace!r}")
        self.location = location
        self.namespace = namespace

    # -- the required contract -------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, records: Sequence[Record]) -> None:
        """Add ``records``, ready from each record's ``due``.

        When this returns, every record MUST be in the store, as durable as the
        store can be. It is all or nothing: on error none of them is visible.
        Ids are unique; enqueueing an id that is already present MUST NOT create
        a second copy.
        """

    @abc.abstractmethod
    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        """Atomically claim up to ``limit`` records with ``due <= now``.

        Records waiting since they were enqueued, requeued, released or
        revived MUST come in due order, none passed over for a later one. A
        record held by a lease that has not expired (``expires > now``) MUST
        NOT be returned; one whose lease expired MUST be claimable again (no
        reaper process may be needed for that), and MAY come before waiting
        records. A claim's ``record.due`` is the due time the record had
        before it was first claimed. Each claim gets a fresh token and
        ``expires = now + lease``. Two callers running
        at once MUST receive disjoint records. The cost MUST NOT grow with
        the number of records that are not due.

        One bad record MUST NOT stop the queue: this method MUST NOT raise
        for a record it cannot read whole (a field missing or of the wrong
        type, written by an operator, an eviction or a bug). It claims such a
        record as usual with ``record.damage`` saying what is wrong, so that
        the caller buries it (:meth:`bury` MUST accept the claim); the other
        records of the batch are returned as usual. An indexed id whose record
        is gone entirely is either claimed that way or dropped from the index
        and reported lost (counted in :attr:`Stats.lost` and listed by
        :meth:`dead_letters` with ``lost=True``). Claiming MUST NOT create a
        record, or any part of one, that was not there.
        """

    @abc.abstractmethod
    def ack(self, claim: Claim) -> None:
        """The message was delivered: remove the record.

        MUST raise :class:`~mailqueue_core.errors.LeaseLost` (and change
        nothing) when the record is now held by another claim or is gone.
        """

    @abc.abstractmethod
    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        """Not delivered yet: release the claim, ``attempts + 1``, due at ``due``.

        Raises ``LeaseLost`` as :meth:`ack` does.
        """

    @abc.abstractmethod
    def release(self, claim: Claim) -> None:
        """Give the claim back untouched (same due time, same attempts).

        Used when a flusher stops before trying the message. Raises
        ``LeaseLost`` as :meth:`ack` does.
        """

    @abc.abstractmethod
    def bury(self, claim: Claim, error: str, now: float) -> None:
        """Will never be delivered: move to the dead letters with ``error``.

        The attempt that buried it counts: the dead letter's ``attempts`` is
        the claimed record's ``attempts + 1``. Raises ``LeaseLost`` as
        :meth:`ack` does.
        """

    @abc.abstractmethod
    def add_dead(self, records: Sequence[Record], now: float) -> None:
        """Put records straight into the dead letters, reason ``last_error``.

        Used for recipients refused permanently while the rest of the
        message goes on.
        """

    @abc.abstractmethod
    def stats(self, now: float) -> Stats:
        """Counts for this namespace (see :class:`Stats`).

        A record held by a lease that expired by ``now`` is ``stuck``, not
        ``ready`` nor ``in_flight``, until it is claimed again.
        """

    @abc.abstractmethod
    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest burial first, at most ``limit``."""

    @abc.abstractmethod
    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        """Move dead letters back to ready (all of them when ``ids`` is None).

        A revived record is due at ``now`` with ``attempts = 0`` and
        ``created = now``, so it gets a full ``MAX_AGE`` again. Unknown ids
        are ignored. Returns how many were revived.
        """

    @abc.abstractmethod
    def purge(self, buried_before: float) -> int:
        """Delete dead letters buried before ``buried_before``; return how many."""

    # -- optional: shared rate limits (capability "rate_limit") -----------------

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float:
        """Take one token from the named bucket; return 0.0, or the seconds to wait.

        The bucket refills at ``rate`` tokens a second and holds at most
        ``burst`` (it starts full). When no whole token is there, nothing is
        taken and the return value says when one will be. MUST be atomic for
        every client of the store, on every machine.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no rate limits")

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None:
        """Take one of ``limit`` slots named ``name`` until ``now + lease``; its token, or None.

        Slots whose lease ran out are free again (a flusher that died gives
        its slot back by expiry). MUST be atomic as :meth:`take_token` is.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no rate limits")

    def release_slot(self, name: str, token: str) -> None:
        """Give a slot back; an unknown or expired token is ignored."""
        raise NotImplementedError(f"{type(self).__name__} keeps no rate limits")

    # -- optional: the console (capability "browse") ----------------------------

    def browse(
        self,
        state: State,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[Entry]:
        """One page of the records in ``state`` at ``now``, at most ``limit``.

        Order: by the state's own time, oldest first (``newest_first``
        reverses it), ties by id: ``record.due`` for ready and scheduled
        records, the lease expiry for in-flight and stuck ones, the burial
        time for dead letters. ``cursor`` is the previous page's
        :attr:`Page.cursor` (an opaque string the store makes; it MUST stay
        usable when records are added or removed meanwhile, and MUST NOT
        repeat an entry or skip one that stayed in the state throughout; one
        the store did not make raises :class:`ValueError`). A page MUST cost
        about the same at the millionth record as at the first: no count or
        scan of the records before the cursor. A page MAY hold
        fewer than ``limit`` entries and still have a next page; a ``limit``
        below 1 raises :class:`ValueError`. A record
        that cannot be read whole is listed with ``record.damage`` set, never
        raised. Reads only: it changes nothing.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its records")

    def get(self, record_id: str, now: float) -> Entry | None:
        """The record ``record_id`` (queued or dead) with its state at ``now``,
        or None when the store holds no such record. Changes nothing."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its records")

    def delete(self, ids: Iterable[str], now: float) -> int:
        """Delete queued records and dead letters by id; return how many.

        A record held by a live lease (in flight at ``now``) MUST NOT be
        deleted: its flusher may be sending it. A stuck one may be. Unknown
        ids are ignored. Each record goes whole or not at all; an id that is
        both queued and dead (a part split off by :meth:`add_dead`) loses
        both, counted once.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its records")

    def send_now(self, ids: Iterable[str], now: float) -> int:
        """Make queued records due at ``now`` (a scheduled one, or one waiting
        for its next try), keeping their attempts; return how many changed.

        A record held by a claim, a record already due and an unknown id are
        left alone (not counted). Dead letters are brought back by
        :meth:`revive`, not by this.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its records")

    # -- optional: pausing delivery (capability "pause") ------------------------

    def paused(self) -> bool:
        """Whether delivery from this namespace is paused. Cheap (one round trip)."""
        return False

    def set_paused(self, paused: bool) -> None:
        """Pause or resume delivery for every flusher of this namespace. MUST
        be durable as the records are, and shared as they are."""
        raise NotImplementedError(f"{type(self).__name__} keeps no pause flag")

    # -- optional: wake-ups (capability "wake") -------------------------------------

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for mail that may have become due now:
        True as soon as a record was enqueued, requeued, released, revived or
        sent now, or delivery resumed, by any client of this namespace since this client's last
        :meth:`fetch_due` or :meth:`wait_for_mail` that returned True (so that
        nothing queued between a claim that found nothing and this call is
        missed, and a wake-up is answered once); False when the time ran out.

        MUST return within ``timeout`` (plus a round trip). MAY return True
        spuriously (the caller then claims and finds nothing). Records falling
        due by the passing of time wake nobody: the caller's poll covers those.
        The default waits the whole timeout (no wake-ups)."""
        time.sleep(max(0.0, timeout))
        return False

    # -- optional: flushers' heartbeats (capability "heartbeat") --------------------

    def beat(self, flusher: str, now: float, expires: float) -> None:
        """Note that ``flusher`` (a name such as ``host:pid``) was active at
        ``now``; the note MAY be forgotten after ``expires``. Cheap (one round
        trip); a flusher calls it every few seconds while it runs."""
        raise NotImplementedError(f"{type(self).__name__} keeps no heartbeats")

    def beats(self, now: float) -> dict[str, float]:
        """When each flusher whose note has not expired by ``now`` was last active."""
        raise NotImplementedError(f"{type(self).__name__} keeps no heartbeats")

    # -- optional: the sent log (capability "sent_log") ---------------------------

    def log_sent(self, records: Sequence[SentRecord], expires: float) -> None:
        """Add ``records`` to the sent log, to be kept until ``expires`` at least
        (unless :meth:`prune_sent` deletes them first). A record whose ``id``
        and ``sent`` are already logged MUST NOT be added twice. Called by the
        flusher after the messages were acked, a batch at a time."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sent log")

    def sent_log(
        self,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page[SentRecord]:
        """One page of the sent log, newest first by default, ordered by
        ``(sent, id)``; cursors as for :meth:`browse` (the same promises,
        ValueError for one the store did not make, a page's cost independent
        of the log's length). Records past their ``expires`` MAY be left out."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sent log")

    def count_sent(self, since: float) -> int:
        """How many logged records were sent at ``since`` or later."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sent log")

    def prune_sent(self, sent_before: float) -> int:
        """Delete the logged records sent before ``sent_before``; return how many."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sent log")

    # -- optional: the server can keep the promises ------------------------------

    def verify(self) -> None:  # noqa: B027 - optional hook
        """Check that the store, as its server is set up, can keep its promises.

        MUST raise :class:`~mailqueue_core.errors.ConfigurationError` naming
        the setting at fault and the fix when it cannot (a Redis that evicts
        keys under memory pressure), and
        :class:`~mailqueue_core.errors.StoreUnavailable` when the store cannot
        be reached. Called by the system check, when a flusher starts, and
        periodically by a running flusher, which refuses to go on. Cheap (one
        round trip at most); the default checks nothing.
        """

    def without_creating(self) -> Store:
        """This store, opening an existing queue only: a twin that creates nothing.

        Used by the commands that only read or repair (``status``, ``dead``,
        ``retry``, ``purge``), so that a mistyped location never looks like an
        empty queue: where there is no queue, the twin's calls MUST raise
        :class:`~mailqueue_core.errors.StoreUnavailable` naming the location.
        The default returns the store itself, for stores whose first use
        creates nothing.
        """
        return self

    # -- conveniences ----------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store may be used again afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r}>"
