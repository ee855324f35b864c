"""The flusher: claim due messages, send each, then ack, requeue or bury it.

Delivery is at-least-once. A message leaves the store only after the transport
accepted it, and it is acked right after its own send, so a crash duplicates at
most the one message in hand. A message is never sent once its lease is about
to run out (another flusher could hold it by then). When the store cannot be
reached to record an outcome, the flusher stops at once: sending more would
only widen the duplicate window. After the first lost lease (another flusher
took a claim over: its clock is ahead, or a send outlasted the lease) the rest
of the batch goes back to the store unsent.

:meth:`Flusher.run` is the service: a failing store is logged and tried again
after a capped backoff, never the end of the run; only ``stop`` ends it, or a
store that :meth:`~mailqueue_core.store.Store.verify` finds unfit
(:class:`~mailqueue_core.errors.ConfigurationError`).

Outcomes (see :mod:`mailqueue_core.errors` for the classification):

- accepted: ack;
- some recipients refused: the rest are done; transiently refused recipients
  go back to the queue as a message of their own, permanently refused ones
  become a dead letter of their own, then the original is acked;
- ``TransientError``: requeue with backoff, or bury once ``max_age`` is passed;
- ``ConnectError``: the same for the whole batch;
- ``SessionError``: the whole batch is requeued and nothing is ever buried for
  it (a wrong password must not dead-letter a day of mail); logged at ERROR;
- ``PermanentError``, an undecodable record, or a claim whose record the store
  could not read whole (``record.damage``): bury at once, with the reason;
- anything else (a bug in a plugin): logged with its traceback, treated as transient.

The parts: :mod:`~mailqueue_core.flusher.worker` holds :class:`Flusher` (one
worker: its settings, one flush, the service);
:mod:`~mailqueue_core.flusher.run` the state and flow of one flush, which turns
each claim into a typed outcome (:mod:`~mailqueue_core.flusher.outcomes`, with
the one rule for giving up on a message) and acts on it;
:mod:`~mailqueue_core.flusher.recording` records outcomes in the store, the
counts, the log and the listener; :mod:`~mailqueue_core.flusher.acker` overlaps
each ack with the next rendering; :mod:`~mailqueue_core.flusher.results` holds
what a flush reports.
"""

from __future__ import annotations

from mailqueue_core.flusher.results import FlushListener, FlushResult, Listeners
from mailqueue_core.flusher.worker import MAX_BACKOFF as MAX_BACKOFF
from mailqueue_core.flusher.worker import Flusher

__all__ = ["FlushListener", "FlushResult", "Flusher", "Listeners"]
