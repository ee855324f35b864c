"""Django signals for what happens to queued mail (Django integration).

Each is sent with ``message_id`` and ``recipients`` (a list of envelope
addresses); the flusher's also carry the outcome:

- ``message_queued``: stored by the backend.
- ``message_sent``: accepted by the transport; ``transport`` (its name) and
  ``provider_id`` (an id the provider gave it, or None).
- ``message_deferred``: will be tried again; ``error`` and ``due`` (a timestamp).
- ``message_buried``: moved to the dead letters; ``reason``.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

from mailqueue_core.flusher import FlushListener
from mailqueue_core.message import QueuedMessage
from mailqueue_core.transport import Delivery

__all__ = [
    "SignalListener",
    "message_buried",
    "message_deferred",
    "message_queued",
    "message_sent",
]

message_queued = Signal()
message_sent = Signal()
message_deferred = Signal()
message_buried = Signal()


def _ids(message_id: str, message: QueuedMessage | None) -> dict[str, Any]:
    recipients = [] if message is None else list(message.recipients)
    return {"message_id": message_id, "recipients": recipients}


class SignalListener(FlushListener):
    """Turns the flusher's outcomes into the signals above."""

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        message_sent.send(
            sender=FlushListener,
            transport=delivery.transport,
            provider_id=delivery.provider_id,
            **_ids(message_id, message),
        )

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        message_deferred.send(
            sender=FlushListener, error=error, due=due, **_ids(message_id, message)
        )

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        message_buried.send(sender=FlushListener, reason=reason, **_ids(message_id, message))
