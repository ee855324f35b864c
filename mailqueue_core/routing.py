"""Transports made of transports: failover lists and per-message routes.

``FailoverTransport`` tries its transports in order. When one fails at the
session level (cannot connect, a 421, authentication, TLS), the next one
gets the same message; a failure that is the message's own (a 5xx, a 4xx to
a recipient) is not retried elsewhere, since another relay would answer the
same. Every batch starts again from the first, so traffic goes back to the
primary as soon as it is up.

``RoutingTransport`` sends each message through the route it names
(``QueuedMessage.transport``, set at enqueue from the ``X-Mailqueue-Transport``
header or the ``mailqueue_transport`` attribute), or through the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailqueue_core.errors import ConnectError, SessionError, TransientError
from mailqueue_core.message import QueuedMessage
from mailqueue_core.text import get_logger
from mailqueue_core.transport import Delivery, Transport

__all__ = ["FailoverTransport", "RoutingTransport"]

logger = get_logger("mailqueue.routing")


class FailoverTransport(Transport):
    name = "failover"

    def __init__(self, transports: Sequence[Transport]) -> None:
        super().__init__("")
        if not transports:
            raise ValueError("a failover list needs at least one transport")
        self.transports = list(transports)
        self.current = 0
        self.opened = False
        # A session failure seen on any transport of this batch: if all fail,
        # that is the one to report, so that nothing is buried for age.
        self.session_error: SessionError | None = None

    def describe(self) -> str:
        return " -> ".join(t.describe() for t in self.transports)

    def open(self) -> None:
        self.current = 0
        self.session_error = None
        self._open_from(0)

    def _give_up(self, last: Exception) -> Exception:
        return self.session_error or last

    def _open_from(self, start: int) -> None:
        last: Exception | None = None
        for index in range(start, len(self.transports)):
            transport = self.transports[index]
            try:
                transport.open()
            except (SessionError, ConnectError) as exc:
                transport.close()
                logger.warning(
                    "transport %s failed (%s); trying the next one", transport.describe(), exc
                )
                if isinstance(exc, SessionError):
                    self.session_error = exc
                last = exc
                continue
            self.current, self.opened = index, True
            return
        self.opened = False
        assert last is not None
        raise self._give_up(last)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.opened = False

    def prepare(self, message: QueuedMessage) -> None:
        self.transports[self.current].prepare(message)

    def send(self, message: QueuedMessage) -> Delivery:
        if not self.opened:
            self._open_from(self.current)
        while True:
            transport = self.transports[self.current]
            try:
                return transport.send(message)
            except (SessionError, ConnectError) as exc:
                transport.close()
                if isinstance(exc, SessionError):
                    self.session_error = exc
                if self.current + 1 >= len(self.transports):
                    self.opened = False
                    raise self._give_up(exc) from None
                logger.warning(
                    "transport %s failed (%s); failing over to the next one",
                    transport.describe(),
                    exc,
                )
                self._open_from(self.current + 1)


class RoutingTransport(Transport):
    name = "routes"

    def __init__(self, default: Transport, routes: Mapping[str, Transport]) -> None:
        super().__init__("")
        self.default = default
        self.routes = dict(routes)
        self._open: set[int] = set()

    def describe(self) -> str:
        return self.default.describe()

    def _pick(self, message: QueuedMessage) -> Transport:
        if message.transport is None:
            return self.default
        try:
            return self.routes[message.transport]
        except KeyError:
            # Probably web servers deployed before this flusher: wait for it.
            raise TransientError(
                f"message names transport {message.transport!r}, which is not in "
                f"MAILQUEUE['TRANSPORTS'] here (known: {', '.join(sorted(self.routes))})"
            ) from None

    def open(self) -> None:
        pass  # each route opens on its first message

    def close(self) -> None:
        for transport in [self.default, *self.routes.values()]:
            if id(transport) in self._open:
                transport.close()
        self._open.clear()

    def prepare(self, message: QueuedMessage) -> None:
        try:
            transport = self._pick(message)
        except TransientError:
            return  # send() says so
        transport.prepare(message)

    def send(self, message: QueuedMessage) -> Delivery:
        transport = self._pick(message)
        if id(transport) not in self._open:
            transport.open()
            self._open.add(id(transport))
        return transport.send(message)
