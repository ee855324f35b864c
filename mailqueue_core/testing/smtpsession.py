"""How :class:`~mailqueue_core.testing.smtpserver.FaultySMTPServer` acts faults out on aiosmtpd.

Only aiosmtpd's documented surface is used, so any aiosmtpd 1.x from 1.4.3 on will do
(1.4.2 cannot STARTTLS on Python 3.11); a test greps the project for aiosmtpd's private
names. Stage by stage:

=========== ===============================================================================
stage       how
=========== ===============================================================================
greeting    :class:`Greeter`, our own asyncio protocol, holds each new connection until its
            banner is due (aiosmtpd sends the banner the moment it is connected and has no
            hook before it). A greeting fault is acted out there; otherwise the transport
            is handed to a fresh aiosmtpd session with asyncio's public protocol switch,
            ``transport.set_protocol()`` and ``connection_made()``.
ehlo        the ``handle_EHLO`` handler hook
starttls    an override of ``smtp_STARTTLS`` (documented: subclasses may override any
            ``smtp_<COMMAND>``); the fault acts before the TLS handshake
auth        an override of ``smtp_AUTH``, firing only for an AUTH aiosmtpd would carry out
mail, rcpt  the ``handle_MAIL`` and ``handle_RCPT`` handler hooks
data        an override of ``smtp_DATA``; a ``drop`` sends 354, waits for the first bytes of
            the message (``data_received``, asyncio's protocol method) and closes
dot         the ``handle_DATA`` handler hook
=========== ===============================================================================

Every hook does what aiosmtpd's documentation asks of it (sets ``session.host_name``,
``envelope.mail_from``, appends to ``envelope.rcpt_tos``, returns a reply) rather than
falling back on aiosmtpd's undocumented defaults. The aiosmtpd subclass keeps no state
under ``_`` names, so it can never clash with aiosmtpd's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailqueue_core.testing.smtpfaults import Fault, FaultTable
from mailqueue_core.text import get_logger

__all__ = ["Connection", "FaultHandler", "FaultySession", "Greeter"]

log = get_logger("mailqueue.testing.smtpserver")

MECHANISMS = ("LOGIN", "PLAIN")  # aiosmtpd's built-in ones, the only ones offered


class Connection:
    """One accepted connection, from before its greeting until it is closed.

    It stays in ``live`` while open, for the server to abort it when it stops.
    """

    def __init__(
        self, index: int, transport: asyncio.BaseTransport, live: set[Connection]
    ) -> None:
        self.index = index
        self.transport = cast(asyncio.Transport, transport)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.live = live
        live.add(self)

    def abort(self) -> None:
        self.transport.abort()

    def lost(self) -> None:
        self.live.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class Greeter(asyncio.Protocol):
    """A new connection's first protocol: the greeting fault, then aiosmtpd.

    ``session(connection)`` makes the aiosmtpd session the connection is handed to.
    """

    def __init__(
        self,
        index: int,
        faults: FaultTable,
        live: set[Connection],
        session: Callable[[Connection], FaultySession],
    ) -> None:
        self.index = index
        self.faults = faults
        self.live = live
        self.session = session
        self.connection: Connection | None = None
        self.early: list[bytes] = []  # a client that speaks before the banner
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection = Connection(self.index, transport, self.live)
        fault = self.faults.take("greeting")
        if fault is None:
            self.hand_over()
        elif fault.action == "drop":
            self.connection.abort()
        elif fault.seconds:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(fault.seconds, self.greet, fault)
        else:
            self.greet(fault)

    def greet(self, fault: Fault) -> None:
        """After a stall (if any): the fault's reply and close, or aiosmtpd's banner."""
        assert self.connection is not None
        self.timer = None
        if fault.reply is None:
            self.hand_over()
        else:
            self.connection.transport.write(fault.reply.encode() + b"\r\n")
            self.connection.transport.close()

    def hand_over(self) -> None:
        assert self.connection is not None
        transport = self.connection.transport
        session = self.session(self.connection)
        transport.set_protocol(session)
        session.connection_made(transport)
        for chunk in self.early:
            session.data_received(chunk)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        return False  # the client gave up before the banner: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.connection is not None:
            self.connection.lost()


class FaultySession(SMTP):
    """aiosmtpd's SMTP session, with the faults its handler hooks cannot show.

    ``offer_auth`` says whether AUTH PLAIN and LOGIN are offered (given to aiosmtpd by the
    server as ``authenticator`` and ``auth_exclude_mechanism``).
    """

    def __init__(self, handler: FaultHandler, connection: Connection, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.faults = handler.faults
        self.offer_auth = handler.offer_auth
        self.connection = connection
        self.body_started: asyncio.Future[None] | None = None

    @property
    def index(self) -> int:
        return self.connection.index

    @property
    def tls(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.body_started is not None and not self.body_started.done():
            self.body_started.set_result(None)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.connection.lost()

    async def hang_up(self, *, graceful: bool = False) -> NoReturn:
        """Close the connection without a word; connection_lost then cancels this session."""
        assert self.transport is not None
        if graceful:
            self.transport.close()
        else:
            self.transport.abort()  # type: ignore[attr-defined]  # a Transport, typed as its base
        await self.loop.create_future()
        raise AssertionError("unreachable: the session task is cancelled")  # pragma: no cover

    async def apply(self, fault: Fault | None) -> str | None:
        """Carry out a fault; return its reply, or None to answer as usual."""
        if fault is None:
            return None
        if fault.action == "drop":
            await self.hang_up()
        if fault.seconds is not None:
            await asyncio.sleep(fault.seconds)
        if fault.reply is not None and fault.closes:
            await self.push(fault.reply)
            await self.hang_up(graceful=True)
        return fault.reply

    def will_authenticate(self, arg: str) -> bool:
        """Whether aiosmtpd would start the exchange for ``AUTH arg`` (RFC 4954's order)."""
        session = self.session
        words = arg.split() if arg else []
        return (
            session is not None
            and bool(session.host_name)
            and session.extended_smtp
            # With STARTTLS on offer, credentials wait for it (auth_require_tls).
            and (self.tls or self.tls_context is None)
            and not session.authenticated
            and len(words) in (1, 2)
            and self.offer_auth
            and words[0] in MECHANISMS
        )

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self.will_authenticate(arg):
            reply = await self.apply(self.faults.take("auth"))
            if reply is not None:
                await self.push(reply)
                return
        await super().smtp_AUTH(arg)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_context and not arg:
            reply = await self.apply(self.faults.take("starttls"))
            if reply is not None:
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
                self.body_started = self.loop.create_future()
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self.body_started  # some of the message is here, not all of it
                await self.hang_up()
            reply = await self.apply(fault)
            if reply is not None:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)


class FaultHandler:
    """aiosmtpd handler hooks: faults at EHLO, MAIL, RCPT and the final dot.

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
        if reply is not None:
            if reply.startswith("2"):
                session.host_name = hostname
            return [reply]
        session.host_name = hostname
        if not self.offer_auth:
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: FaultySession,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = await server.apply(self.faults.take("mail"))
        if reply is None or reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply or "250 OK"

    async def handle_RCPT(
        self,
        server: FaultySession,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = await server.apply(self.faults.take("rcpt", address, len(envelope.rcpt_tos)))
        if reply is None or reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 OK"

    async def handle_DATA(
        self, server: FaultySession, session: Session, envelope: Envelope
    ) -> str:
        fault = self.faults.take("dot")
        if fault is not None and fault.action == "drop":
            self.deliver(server, envelope, True)
        elif fault is None or fault.reply is None or fault.reply.startswith("2"):
            # Delivered before a stall: a server that has the message keeps it even if the
            # client gives up waiting for the 250 (the duplicate-on-timeout case).
            self.deliver(server, envelope, False)
        return await server.apply(fault) or "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        log.info("SMTP session error: %r", error)
        return f"500 5.0.0 Error: {type(error).__name__}"
