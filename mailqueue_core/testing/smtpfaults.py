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

This module also holds the aiosmtpd session and handler that act the faults out. The fault
table is shared between the test's thread and the server's event loop, hence its lock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

__all__ = [
    "ACTIONS",
    "STAGES",
    "Fault",
    "FaultHandler",
    "FaultTable",
    "FaultySession",
    "make_fault",
]

log = logging.getLogger("mailqueue.testing.smtpserver")

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


class FaultySession(SMTP):
    """aiosmtpd's SMTP session, with the faults aiosmtpd has no handler hook for.

    ``index`` numbers the connection; ``live`` holds the sessions still connected, for the
    server to close them when it stops.
    """

    def __init__(
        self, handler: FaultHandler, index: int, live: set[FaultySession], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.faults = handler.faults
        self.index = index
        self.live = live
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # the second call comes after STARTTLS
        super().connection_made(transport)
        if first:
            self.live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.live.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]  # a Transport, typed as its base

    @property
    def tls(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        )

    async def hang_up(self, *, graceful: bool = False) -> NoReturn:
        """Close the connection without a word; connection_lost then cancels this session."""
        assert self.transport is not None
        if graceful:
            self.transport.close()
        else:
            self.transport.abort()  # type: ignore[attr-defined]
        await self.loop.create_future()
        raise AssertionError("unreachable: the session task is cancelled")  # pragma: no cover

    async def apply(self, fault: Fault | None) -> Any:
        """Carry out a fault; return its reply, or MISSING to let aiosmtpd go on as usual."""
        if fault is None:
            return MISSING
        if fault.action == "drop":
            await self.hang_up()
        if fault.seconds is not None:
            await asyncio.sleep(fault.seconds)
        if fault.reply is None:
            return MISSING
        if fault.closes:
            await self.push(fault.reply)
            await self.hang_up(graceful=True)
        return fault.reply

    async def _handle_client(self) -> None:
        # aiosmtpd sends the banner itself, first thing in this coroutine.
        reply = await self.apply(self.faults.take("greeting"))
        if reply is not MISSING:
            await self.push(reply)
            await self.hang_up(graceful=True)
        await super()._handle_client()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_context and not arg:
            reply = await self.apply(self.faults.take("starttls"))
            if reply is not MISSING:
                await self.push(reply)
                return
        await super().smtp_STARTTLS(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # Only a DATA that aiosmtpd would accept meets the fault (recipients imply
        # EHLO, AUTH and MAIL went through).
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            fault = self.faults.take("data")
            if fault is not None and fault.action == "drop":
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.read(1)  # some of the message is here, not all of it
                await self.hang_up()
            reply = await self.apply(fault)
            if reply is not MISSING:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)


class FaultHandler:
    """aiosmtpd handler hooks: faults at EHLO, AUTH, MAIL, RCPT and the final dot.

    ``deliver(session, envelope, dropped)`` takes each message that came in full: accepted,
    or thrown away by a ``dot`` drop (``dropped=True``).
    """

    def __init__(
        self,
        faults: FaultTable,
        *,
        offer_auth: bool,
        require_auth: bool,
        deliver: Callable[[FaultySession, Envelope, bool], None],
    ) -> None:
        self.faults = faults
        self.offer_auth = offer_auth
        self.require_auth = require_auth
        self.deliver = deliver

    async def handle_EHLO(
        self,
        server: FaultySession,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        reply = await server.apply(self.faults.take("ehlo"))
        if reply is not MISSING:
            if reply.startswith("2"):
                session.host_name = hostname
            return [reply]
        session.host_name = hostname
        if not self.offer_auth:
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_AUTH(
        self, server: FaultySession, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        return await server.apply(self.faults.take("auth"))

    async def handle_MAIL(
        self,
        server: FaultySession,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> Any:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = await server.apply(self.faults.take("mail"))
        if reply is not MISSING and reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(
        self,
        server: FaultySession,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> Any:
        reply = await server.apply(self.faults.take("rcpt", address, len(envelope.rcpt_tos)))
        if reply is not MISSING and reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(
        self, server: FaultySession, session: Session, envelope: Envelope
    ) -> Any:
        fault = self.faults.take("dot")
        if fault is not None and fault.action == "drop":
            self.deliver(server, envelope, True)
        elif fault is None or fault.reply is None or fault.reply.startswith("2"):
            # Delivered before a stall: a server that has the message keeps it even if the
            # client gives up waiting for the 250 (the duplicate-on-timeout case).
            self.deliver(server, envelope, False)
        return await server.apply(fault)

    async def handle_exception(self, error: Exception) -> str:
        log.info("SMTP session error: %r", error)
        return f"500 5.0.0 Error: {type(error).__name__}"
