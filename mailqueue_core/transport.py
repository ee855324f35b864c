"""The transport contract: how a flusher hands one message to the outside world.

A transport is built as ``TransportClass(location, **options)`` (location is
the URL it was named by, or ``""``). The flusher opens it once per batch, sends
the batch's messages one at a time through it, and closes it::

    with transport:                     # open(): may raise SessionError/TransientError
        delivery = transport.send(msg)  # one message

A transport MUST translate its library's exceptions into the classified
errors of :mod:`mailqueue_core.errors`, in one place, ``from`` the original:

- :class:`~mailqueue_core.errors.SessionError`: the session failed for a
  reason that is not the message's (authentication, STARTTLS, greeting, 421).
  The flusher defers the whole batch and buries nothing.
- :class:`~mailqueue_core.errors.TransientError`: try this message later
  (cannot connect, timeout, disconnect, 4xx). After a disconnect the
  transport MUST reopen its connection on the next ``send``.
- :class:`~mailqueue_core.errors.PermanentError`: never deliverable (5xx).

Recipients refused while others were accepted are not an error: ``send``
returns them in :attr:`Delivery.refused`, each with its classified error.
When every recipient is refused, ``send`` raises instead.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from mailqueue_core.errors import DeliveryError
from mailqueue_core.message import QueuedMessage

__all__ = ["Delivery", "Transport"]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What a transport did with one message it accepted."""

    refused: dict[str, DeliveryError] = dataclasses.field(default_factory=dict)
    """Recipients refused (TransientError or PermanentError each); the rest were accepted."""
    transport: str = ""
    """Which transport delivered it (for the log and the ``message_sent`` signal)."""
    provider_id: str | None = None
    """An id the provider gave the message, when it gives one."""


class Transport(abc.ABC):
    """Sends queued messages. One instance is used by one thread at a time."""

    #: The name it is registered under, for logs.
    name: ClassVar[str] = ""

    def __init__(self, location: str = "") -> None:
        self.location = location

    def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare for a batch (open a connection). Idempotent."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """End the batch. MUST NOT raise for a connection that is already gone."""

    def prepare(self, message: QueuedMessage) -> None:  # noqa: B027 - optional hook
        """Do the CPU work for ``message`` ahead of :meth:`send` (render it).

        The flusher calls it while the previous message's ack is in flight.
        It MUST NOT talk to the server and MUST NOT raise: a failure here is
        met again, and reported, by ``send``.
        """

    @abc.abstractmethod
    def send(self, message: QueuedMessage) -> Delivery:
        """Deliver ``message`` to ``message.recipients``; raise a classified error."""

    def __enter__(self) -> Transport:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def describe(self) -> str:
        """A description for logs: never includes credentials."""
        return self.name or type(self).__name__
