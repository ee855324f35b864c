"""What the commands print.

Recipients, subjects and error reasons come from outside (a site's users, other
people's mail servers): every line is printed through
:func:`~mailqueue_core.text.printable`, so that a reply holding ``ESC[2J``
shows as ``\\x1b[2J`` instead of clearing the operator's screen.

stderr carries problems and also what is not one (the progress count, a note
that mail moved): :func:`plain` gives the stream for the latter, which Django's
``manage.py`` would otherwise print in bold red on a terminal.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from mailqueue_core.flusher import FlushListener
from mailqueue_core.text import printable

__all__ = ["Progress", "is_tty", "plain", "say"]


def say(stream: TextIO, *lines: str, flush: bool = False) -> None:
    """Print ``lines``, one per line, control characters escaped."""
    stream.write("".join(f"{printable(line)}\n" for line in lines))
    if flush:
        stream.flush()


def plain(stream: TextIO) -> TextIO:
    """``stream`` for text that is not an error.

    A stream that styles what it prints (``manage.py`` styles stderr as errors)
    offers an unstyled twin as its ``plain`` attribute; any other is returned.
    """
    twin = getattr(stream, "plain", None)
    return twin if twin is not None else stream


def is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress(FlushListener):
    """A running count on a terminal, for a long interactive flush."""

    every = 0.5
    """Seconds between two updates of the line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.counts = {"sent": 0, "deferred": 0, "buried": 0}
        self.shown = 0.0
        self.gone = False

    def _tick(self, outcome: str) -> None:
        self.counts[outcome] += 1
        now = time.monotonic()
        if self.gone or now - self.shown < self.every:
            return
        self.shown = now
        c = self.counts
        line = printable(f"{c['sent']} sent, {c['deferred']} deferred, {c['buried']} buried")
        try:
            self.out.write(f"\r{line}")
            self.out.flush()
        except OSError:
            # The terminal hung up (the flush goes on after SIGHUP): no one is watching.
            self.gone = True

    def sent(self, message_id: str, message: Any, delivery: Any) -> None:
        self._tick("sent")

    def deferred(self, message_id: str, message: Any, error: str, due: float) -> None:
        self._tick("deferred")

    def buried(self, message_id: str, message: Any, reason: str) -> None:
        self._tick("buried")

    def done(self) -> None:
        if self.shown and not self.gone:
            self.out.write("\r\x1b[K")  # clear the line; the summary follows
            self.out.flush()
