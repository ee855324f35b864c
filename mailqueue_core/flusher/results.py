"""What a flush reports: its counts, and every outcome to a listener."""

from __future__ import annotations

import dataclasses

from mailqueue_core.message import QueuedMessage
from mailqueue_core.transport import Delivery

__all__ = ["FlushListener", "FlushResult", "Listeners"]


@dataclasses.dataclass
class FlushResult:
    sent: int = 0
    deferred: int = 0
    buried: int = 0
    elapsed: float = 0.0
    paused: bool = False
    """The run found delivery paused (``mailqueue pause``) and sent nothing more."""

    def add(self, other: FlushResult) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.buried += other.buried
        self.paused = other.paused

    def summary(self) -> str:
        held = "; delivery is paused (mailqueue resume)" if self.paused else ""
        return (
            f"sent {self.sent}, deferred {self.deferred}, buried {self.buried} "
            f"in {self.elapsed:.1f}s{held}"
        )


class FlushListener:
    """Told about every outcome; the Django integration turns these into signals."""

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        pass

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        pass

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        pass


class Listeners(FlushListener):
    """Several listeners heard as one."""

    def __init__(self, *listeners: FlushListener) -> None:
        self.listeners = listeners

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        for listener in self.listeners:
            listener.sent(message_id, message, delivery)

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        for listener in self.listeners:
            listener.deferred(message_id, message, error, due)

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        for listener in self.listeners:
            listener.buried(message_id, message, reason)
