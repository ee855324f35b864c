"""mailqueue: a mail queue for Django that loses nothing.

The engine: messages, the store and transport contracts, the retry policy and
the flusher. It needs no Django project to import.

Public names: the store contract (:class:`Store` and the values it passes:
:class:`Record`, :class:`Claim`, :class:`DeadLetter`, :class:`Stats`), the
transport contract (:class:`Transport`, :class:`Delivery`), the message
(:class:`QueuedMessage`) and the error tree of :mod:`mailqueue_core.errors`.
``__version__`` is the installed distribution's version.
"""

import importlib.metadata as _metadata

from mailqueue_core.errors import (
    CodecError,
    ConfigurationError,
    ConnectError,
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
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import Claim, DeadLetter, Record, Stats, Store
from mailqueue_core.transport import Delivery, Transport

try:
    __version__ = _metadata.version("mailqueue")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree never installed
    __version__ = "0+unknown"

__all__ = [
    "Claim",
    "CodecError",
    "ConfigurationError",
    "ConnectError",
    "DeadLetter",
    "Delivery",
    "DeliveryError",
    "LeaseLost",
    "MailQueueError",
    "MessageTooLarge",
    "PermanentError",
    "QueuedMessage",
    "Record",
    "SessionError",
    "Stats",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TransientError",
    "Transport",
]
