"""Small helpers shared by tests: a scripted transport, a clock, message builders."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from mailqueue_core import codec
from mailqueue_core.errors import DeliveryError
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import Record
from mailqueue_core.transport import Delivery, Transport


class Clock:
    """An injected clock that tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedTransport(Transport):
    """A transport whose outcome per message is decided by the test.

    ``script(message)`` returns a Delivery or raises a DeliveryError; the
    default accepts everything. Every attempted message is recorded.
    """

    name = "scripted"

    def __init__(self, script: Callable[[QueuedMessage], Delivery] | None = None) -> None:
        super().__init__("")
        self.script = script or (lambda m: Delivery(transport="scripted"))
        self.sent: list[QueuedMessage] = []
        self.attempts: list[QueuedMessage] = []
        self.opened = 0
        self.open_error: DeliveryError | None = None

    def open(self) -> None:
        self.opened += 1
        if self.open_error is not None:
            raise self.open_error

    def send(self, message: QueuedMessage) -> Delivery:
        self.attempts.append(message)
        delivery = self.script(message)
        self.sent.append(message)
        return delivery


def message(
    *recipients: str, created: float, subject: str = "Hello", id: str | None = None
) -> QueuedMessage:
    rcpts = list(recipients) or ["to@example.com"]
    return QueuedMessage(
        from_email="site@example.com",
        envelope_from="site@example.com",
        recipients=rcpts,
        to=rcpts,
        subject=subject,
        body="Body",
        headers={"Message-ID": f"<{uuid.uuid4().hex}@example.com>"},
        id=id or uuid.uuid4().hex,
        created=created,
        due=created,
    )


def record(*recipients: str, created: float, **kwargs: object) -> Record:
    return codec.to_record(message(*recipients, created=created, **kwargs))  # type: ignore[arg-type]
