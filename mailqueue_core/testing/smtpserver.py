"""A real SMTP server on loopback, for tests, that can be told to misbehave.

:class:`FaultySMTPServer` runs aiosmtpd's SMTP protocol on 127.0.0.1 (a free port) in an
event loop of its own thread, so plain blocking clients (smtplib, a transport, a flusher
in a subprocess) talk to it as to any mail server. It drives aiosmtpd through its
documented hooks only (``mailqueue_core.testing.smtpsession`` says which, stage by stage),
so any aiosmtpd 1.x from 1.4.3 on serves::

    with FaultySMTPServer() as server:
        server.fault("rcpt", "550 5.1.1 No such user", recipients=["gone@example.com"])
        server.fault("dot", "451 4.7.1 Greylisted", times=1)
        server.fault("rcpt", "452 4.5.3 Too many recipients", max_recipients=100)
        ...  # send through smtplib or a transport at server.host, server.port
        assert server.messages[0].rcpt_tos == ["kept@example.com"]

What it records: each accepted message as a :class:`Received` (envelope, bytes as
received after dot-unstuffing, TLS, authenticated user, connection index), the messages a
``dot`` drop threw away after receiving them (``dropped_after_dot``), and how many
connections it accepted. The faults and their stages are described in
:mod:`mailqueue_core.testing.smtpfaults`.

Security and TLS: with ``auth`` (``{user: password}``) AUTH PLAIN and LOGIN are offered, in
clear text when no TLS is configured (loopback only), after STARTTLS when a
``starttls_context`` is given. :func:`make_tls_contexts` makes a throw-away CA with
``trustme`` (a test dependency) and returns a server context and a client context that
trusts it.

It never logs message bodies (aiosmtpd logs each DATA line at DEBUG; a filter on its
``mail.log`` logger drops those records) nor credentials.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailqueue_core.testing.smtpfaults import Fault, FaultTable, make_fault
from mailqueue_core.testing.smtpsession import (
    MECHANISMS,
    Connection,
    FaultHandler,
    FaultySession,
    Greeter,
)
from mailqueue_core.text import get_logger

__all__ = ["FaultySMTPServer", "Received", "make_tls_contexts"]

log = get_logger("mailqueue.testing.smtpserver")

_T = TypeVar("_T")
_CONTROL_TIMEOUT = 10.0  # seconds a start, stop or fault change may take before it is a bug


@dataclass(frozen=True)
class Received:
    """One message as the server took it."""

    mail_from: str
    rcpt_tos: list[str]  # only the accepted recipients
    data: bytes  # exactly as received after dot-unstuffing, CRLF as sent
    arrived: float  # time.time()
    auth_user: str | None
    tls: bool
    connection: int  # index of the connection it came on, from 0


def make_tls_contexts(
    ca_path: str | os.PathLike[str] | None = None,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for ``localhost``/``127.0.0.1`` and a client context trusting its CA.

    ``ca_path``, if given, receives the CA certificate in PEM, for clients that take a CA
    file rather than a context (another process, a URL option).
    """
    import trustme  # a test dependency only

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    if ca_path is not None:
        ca.cert_pem.write_to_path(os.fspath(ca_path))
    return server_ctx, client_ctx


class _NoBodies(logging.Filter):
    # aiosmtpd logs every DATA line at DEBUG, and a deprecation note on every login.
    _QUIET = frozenset(
        {
            "DATA readline: %s",
            "Session.login_data is deprecated and will be removed in version 2.0",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._QUIET


def _quiet_aiosmtpd() -> None:
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _NoBodies) for f in logger.filters):
        logger.addFilter(_NoBodies())


class FaultySMTPServer:
    """A real SMTP server on 127.0.0.1 whose misbehaviour tests switch on with :meth:`fault`.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. All methods are
    thread-safe and may be called while clients are connected.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        auth: Mapping[str, str] | None = None,
        require_auth: bool = False,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        if require_auth and not auth:
            raise ValueError("require_auth=True needs auth={user: password}")
        if starttls_context is not None and implicit_tls_context is not None:
            raise ValueError("give starttls_context or implicit_tls_context, not both")
        self.port = port  # 0: a free one, chosen at start
        self._auth = dict(auth) if auth else None
        self._starttls = starttls_context
        self._implicit_tls = implicit_tls_context
        self._faults = FaultTable()
        self._state = threading.Condition()
        self._messages: list[Received] = []
        self._dropped: list[Received] = []
        self._connections = 0
        self._handler = FaultHandler(
            self._faults,
            offer_auth=self._auth is not None,
            require_auth=require_auth,
            deliver=self._deliver,
        )
        # Owned by the server thread once started:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._live: set[Connection] = set()
        self._attaching: set[asyncio.Task[None]] = set()
        self._unattached: set[socket.socket] = set()

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> FaultySMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (on the previous port if restarted, else a free one) and serve."""
        if self._thread is not None:
            raise RuntimeError("the SMTP server is already running")
        _quiet_aiosmtpd()
        # A selector loop on every platform: the listener is watched with add_reader.
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(
            target=self._run_loop, args=(self._loop,), name="FaultySMTPServer", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._begin())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close every connection, stalled or half-open, and the listener; end the thread."""
        if self._thread is None or self._loop is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT)
            self._thread = None
            self._loop = None

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    # -- what arrived -------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        """The messages accepted so far, in arrival order (a copy)."""
        with self._state:
            return list(self._messages)

    @property
    def dropped_after_dot(self) -> list[Received]:
        """Messages received in full, then thrown away by a ``dot`` drop (a copy)."""
        with self._state:
            return list(self._dropped)

    @property
    def connections(self) -> int:
        """How many connections were accepted since the server was made."""
        with self._state:
            return self._connections

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``n`` messages arrived; return them all.

        Raises TimeoutError saying how many arrived when ``timeout`` seconds pass first.
        """
        with self._state:
            if not self._state.wait_for(lambda: len(self._messages) >= n, timeout):
                raise TimeoutError(
                    f"{len(self._messages)} of {n} messages arrived within {timeout} s"
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages and dropped messages (the connection count stays)."""
        with self._state:
            self._messages.clear()
            self._dropped.clear()

    def _deliver(self, conn: FaultySession, envelope: Envelope, dropped: bool) -> None:
        assert envelope.mail_from is not None and envelope.original_content is not None
        assert conn.session is not None
        message = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content,
            arrived=time.time(),
            auth_user=conn.session.auth_data if conn.session.authenticated else None,
            tls=conn.tls,
            connection=conn.index,
        )
        with self._state:
            (self._dropped if dropped else self._messages).append(message)
            self._state.notify_all()

    # -- faults -------------------------------------------------------------------------

    def fault(
        self,
        stage: str,
        reply: str | None = None,
        *,
        recipients: Iterable[str] | None = None,
        times: int | None = None,
        action: str = "reply",
        seconds: float | None = None,
        max_recipients: int | None = None,
    ) -> Fault:
        """Misbehave at ``stage`` from now on (see :mod:`~mailqueue_core.testing.smtpfaults`).

        ``times=N`` makes the fault fire for the next N matching events only.
        ``max_recipients=N`` (stage ``rcpt``) makes it fire only once the transaction holds N
        accepted recipients: a recipient limit. The newest fault matching an event wins.
        Returns the fault, whose ``fired`` counts its hits.
        A ``connect`` refusal takes effect before this returns.
        """
        made = make_fault(
            stage,
            reply,
            recipients=recipients,
            times=times,
            action=action,
            seconds=seconds,
            max_recipients=max_recipients,
        )
        self._faults.add(made)
        if stage == "connect" and self._loop is not None:
            self._call(self._sync_listener())
        return made

    def clear_faults(self) -> None:
        """Behave again; a refused port listens again (the same port) before this returns."""
        self._faults.clear()
        if self._loop is not None:
            self._call(self._sync_listener())

    # -- on the server thread -----------------------------------------------------------

    async def _begin(self) -> None:
        self._open_listener()
        await self._sync_listener()

    async def _sync_listener(self) -> None:
        if self._faults.refusing():
            self._close_listener()
        elif self._listener is None:
            self._open_listener()

    def _open_listener(self) -> None:
        # SO_REUSEADDR (set by create_server) lets a refused port be bound again at once.
        listener = socket.create_server((self.host, self.port))
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener, self._accept, listener)

    def _close_listener(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        # A plain callback rather than sock_accept in a task: cancelling that task could
        # lose a socket accepted at the same moment.
        try:
            sock, _ = listener.accept()
        except OSError:  # the client went away before accept, or another wake-up took it
            return
        # A real relay answers EHLO in one write; aiosmtpd writes a line at a time, and
        # without TCP_NODELAY each line after the first waits for the client's delayed
        # ACK (40 ms a session on Linux). asyncio sets it only on sockets it accepts.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._state:
            index = self._connections
            self._connections += 1
        self._unattached.add(sock)
        task = asyncio.get_running_loop().create_task(self._attach(sock, index))
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)

    async def _attach(self, sock: socket.socket, index: int) -> None:
        self._unattached.discard(sock)  # from here on asyncio closes it
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                partial(Greeter, index, self._faults, self._live, self._session),
                sock,
                ssl=self._implicit_tls,
            )
        except OSError as exc:
            log.debug("connection %d: TLS handshake failed: %s", index, exc)

    def _session(self, connection: Connection) -> FaultySession:
        return FaultySession(
            self._handler,
            connection,
            loop=asyncio.get_running_loop(),
            hostname="localhost",
            enable_SMTPUTF8=True,
            tls_context=self._starttls,
            # Over implicit TLS aiosmtpd does not see a TLS layer of its own.
            auth_require_tls=self._starttls is not None,
            authenticator=self._authenticate if self._auth else None,
            auth_exclude_mechanism=None if self._auth else MECHANISMS,
        )

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: LoginPassword,
    ) -> AuthResult:
        assert self._auth is not None
        user = auth_data.login.decode("utf-8", "replace")
        expected = self._auth.get(user)
        if expected is not None and hmac.compare_digest(expected.encode(), auth_data.password):
            return AuthResult(success=True, auth_data=user)
        log.info("AUTH %s failed for %r", mechanism, user)
        return AuthResult(success=False, handled=False)

    async def _shutdown(self) -> None:
        self._close_listener()
        # Pending implicit-TLS handshakes first, so no session starts after the aborts.
        attaching = list(self._attaching)
        for task in attaching:
            task.cancel()
        await asyncio.gather(*attaching, return_exceptions=True)
        for sock in self._unattached:
            sock.close()
        self._unattached.clear()
        closing = [conn.closed for conn in self._live]
        for conn in list(self._live):
            conn.abort()
        if closing:
            await asyncio.wait(closing, timeout=_CONTROL_TIMEOUT)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
