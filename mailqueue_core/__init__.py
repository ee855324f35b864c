"""mailqueue: a mail queue for Django that loses nothing.

The engine: messages, the store and transport contracts, the retry policy and
the flusher. It needs no Django project to import.
"""

from mailqueue_core.errors import (
    CodecError,
    ConfigurationError,
    DeliveryError,
    LeaseLost,
    MailQueueError,
    MessageTooLarge,
    PermanentError,
    SessionError,
    StoreError,
    StoreUnavailable,
    TransientError,
)
from mailqueue_core.store import Claim, DeadLetter, Record, Stats, Store

__all__ = [
    "Claim",
    "CodecError",
    "ConfigurationError",
    "DeadLetter",
    "DeliveryError",
    "LeaseLost",
    "MailQueueError",
    "MessageTooLarge",
    "PermanentError",
    "Record",
    "SessionError",
    "Stats",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TransientError",
]
