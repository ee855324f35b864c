"""The faults a :class:`~mailqueue_core.testing.smtpserver.FaultySMTPServer` can be told to show.

A fault names a *stage* of the SMTP conversation and what the server does there:

=========== ==========================================================================
stage       where it fires
=========== ==========================================================================
connect     a new connection (only ``action="refuse"``: stop listening until cleared)
greeting    instead of the 220 banner; a reply is sent, then the connection is closed
ehlo        the EHLO command (HELO is left alone, so a 502 here makes a client fall
            back to HELO as it would with an old server)
starttls    the STARTTLS command, before the TLS handshake
auth        the AUTH command, before credentials are exchanged
mail        the MAIL FROM command
rcpt        the RCPT TO command, optionally only for some ``recipients``, or only once
            the transaction holds ``max_recipients`` accepted ones (a recipient limit)
data        the DATA command; ``drop`` closes mid-message, after some bytes arrived
dot         the reply after the final dot; ``drop`` closes after the whole message
=========== ==========================================================================

Actions: ``reply`` sends the given reply instead of the normal one; ``drop`` closes the
connection without replying; ``stall`` waits ``seconds`` first, then carries on normally
(or sends ``reply`` if one is given); ``refuse`` is for the ``connect`` stage only.
A reply starting with 421 closes the connection after it is sent, as RFC 5321 says; a 2xx
reply at ``mail``, ``rcpt`` or ``dot`` is success in other words (the message goes through).
A stall at ``dot`` records the message at once: a real server that has the whole message
keeps it even when the client gives up waiting for the 250 (the duplicate-on-timeout case).

A recipient limit as RFC 5321 4.5.3.1.10 describes it (``452`` to every RCPT past the first
N of a transaction; a new MAIL FROM starts counting again)::

    server.fault("rcpt", "452 4.5.3 Too many recipients", max_recipients=1000)

How each stage is acted out on aiosmtpd is in ``mailqueue_core.testing.smtpsession``.
The fault table is shared between the test's thread and the server's event loop, hence its
lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ACTIONS",
    "STAGES",
    "Fault",
    "FaultTable",
    "make_fault",
]

STAGES = ("connect", "greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "dot")
ACTIONS = ("reply", "drop", "stall", "refuse")

_REPLY = re.compile(r"[2-5]\d\d( .*)?\Z", re.DOTALL)


@dataclass(eq=False)
class Fault:
    """One fault as set by ``FaultySMTPServer.fault()``; ``fired`` counts how often it hit."""

    stage: str
    action: str
    reply: str | None
    recipients: frozenset[str] | None
    times: int | None
    seconds: float | None
    max_recipients: int | None = None
    fired: int = field(default=0)

    @property
    def closes(self) -> bool:
        """Whether the connection is closed after the reply (RFC 5321: 421 closes)."""
        return self.reply is not None and self.reply.startswith("421")

    def matches(self, recipient: str | None, held: int) -> bool:
        """Whether it fires for ``recipient`` in a transaction holding ``held`` recipients."""
        if self.max_recipients is not None and held < self.max_recipients:
            return False
        if self.recipients is None:
            return True
        return recipient is not None and recipient.lower() in self.recipients


def make_fault(
    stage: str,
    reply: str | None,
    *,
    recipients: Iterable[str] | None,
    times: int | None,
    action: str,
    seconds: float | None,
    max_recipients: int | None = None,
) -> Fault:
    """Check the arguments of ``fault()`` and build the fault; ValueError says what is wrong."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    if (stage == "connect") != (action == "refuse"):
        raise ValueError("action 'refuse' is for stage 'connect', the only action it has")
    if action == "reply" and reply is None:
        raise ValueError(
            f"action 'reply' at stage {stage!r} needs a reply, e.g. '451 4.3.0 Try later'"
        )
    if action in ("drop", "refuse") and reply is not None:
        raise ValueError(f"action {action!r} sends no reply, yet reply={reply!r} was given")
    if reply is not None and not _REPLY.match(reply):
        raise ValueError(f"reply {reply!r} is not an SMTP reply line ('<2xx-5xx> <text>')")
    if (action == "stall") != (seconds is not None):
        raise ValueError("seconds is required for action 'stall' and only for it")
    if seconds is not None and seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds}")
    if recipients is not None and stage != "rcpt":
        raise ValueError("recipients only applies to stage 'rcpt'")
    if max_recipients is not None and (stage != "rcpt" or max_recipients < 1):
        raise ValueError("max_recipients applies to stage 'rcpt' only, and is at least 1")
    if times is not None and (times < 1 or stage == "connect"):
        raise ValueError("times must be at least 1, and a refusal lasts until cleared")
    return Fault(
        stage=stage,
        action=action,
        reply=reply,
        recipients=None if recipients is None else frozenset(r.lower() for r in recipients),
        times=times,
        seconds=seconds,
        max_recipients=max_recipients,
    )


class FaultTable:
    """The faults in force; the newest matching fault wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def refusing(self) -> bool:
        with self._lock:
            return any(f.stage == "connect" for f in self._faults)

    def take(self, stage: str, recipient: str | None = None, held: int = 0) -> Fault | None:
        """The fault firing at this event, counted against its ``times``, or None.

        ``held`` is how many recipients the transaction has accepted so far (RCPT only).
        """
        with self._lock:
            for fault in reversed(self._faults):
                if fault.stage == stage and fault.matches(recipient, held):
                    fault.fired += 1
                    if fault.times is not None and fault.fired >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None
