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
from mailqueue_core.text import get_logger
from mailqueue_core.transport import Delivery

__all__ = [
    "SignalListener",
    "message_buried",
    "message_deferred",
    "message_queued",
    "message_sent",
]

logger = get_logger("mailqueue.signals")

message_queued = Signal()
message_sent = Signal()
message_deferred = Signal()
message_buried = Signal()


def _ids(message_id: str, message: QueuedMessage | None) -> dict[str, Any]:
    recipients = [] if message is None else list(message.recipients)
    return {"message_id": message_id, "recipients": recipients}


def _send(signal: Signal, **kwargs: Any) -> None:
    # A site's receiver that fails must not stop deliveries: the outcome is
    # already recorded in the store.
    for receiver, result in signal.send_robust(sender=FlushListener, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "signal receiver %r failed for message %s: %r",
                receiver,
                kwargs.get("message_id"),
                result,
            )


class SignalListener(FlushListener):
    """Turns the flusher's outcomes into the signals above."""

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        _send(
            message_sent,
            transport=delivery.transport,
            provider_id=delivery.provider_id,
            **_ids(message_id, message),
        )

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        _send(message_deferred, error=error, due=due, **_ids(message_id, message))

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        _send(message_buried, reason=reason, **_ids(message_id, message))
