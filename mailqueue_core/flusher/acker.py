"""Acks overlapped with the rendering of the next message, never with its send."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from mailqueue_core.errors import LeaseLost
from mailqueue_core.store import Claim, Store

__all__ = ["Acker"]


class Acker:
    """Acks message k on a thread while message k+1 is decoded and rendered.

    The next message is sent only after :meth:`settle` saw that ack through,
    so a crash still leaves at most one sent-but-unacked message, and a store
    that fails to ack still stops the flusher before its next send. An ack
    refused with ``LeaseLost`` is passed to ``lost``, which tells the flusher
    to send nothing more of the batch.
    """

    def __init__(self, store: Store, threaded: bool, lost: Callable[[Claim, str], None]) -> None:
        self.store = store
        self.lost = lost
        self.executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailqueue-ack")
            if threaded
            else None
        )
        self.pending: tuple[Claim, Future[None]] | None = None

    def ack(self, claim: Claim) -> None:
        self.settle()
        if self.executor is None:
            self._done(claim, None)
            return
        self.pending = (claim, self.executor.submit(self.store.ack, claim))

    def settle(self) -> None:
        """Wait for the ack in flight; raises what the store raised (but LeaseLost)."""
        if self.pending is not None:
            claim, future = self.pending
            self.pending = None
            self._done(claim, future)

    def _done(self, claim: Claim, future: Future[None] | None) -> None:
        try:
            if future is None:
                self.store.ack(claim)
            else:
                future.result()
        except LeaseLost:
            self.lost(
                claim,
                "was delivered but its lease had been taken over; "
                "the other flusher may deliver it again",
            )

    def close(self) -> None:
        try:
            self.settle()
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
