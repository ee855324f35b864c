"""The signals a flusher process answers.

SIGTERM and SIGINT stop it: the message in hand is finished, the rest of the
batch is given back, and the command exits 0. SIGHUP starts it over: the same,
then the store is checked again and delivery goes on with a fresh claim (the
settings are not read again). A process with ``--workers`` passes each signal
on to its workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["SIGNALS", "Interrupts"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclasses.dataclass
class Interrupts:
    """The events the signals set, and the worker processes they are passed on to."""

    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    start_over: threading.Event = dataclasses.field(default_factory=threading.Event)
    children: set[int] = dataclasses.field(default_factory=set)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        (self.start_over if signum == signal.SIGHUP else self.stop).set()
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    @contextlib.contextmanager
    def handled(self) -> Iterator[None]:
        """Answer the signals while the block runs (only the main thread can)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[set[int | signal.Signals]]:
        """Hold the signals back while the block runs (a fork), yielding the mask
        to restore; a forked worker restores it itself once it forgot the others."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            yield mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
