"""Small helpers shared by tests: a scripted transport, a clock, message builders."""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import django

from mailqueue_core import codec
from mailqueue_core.errors import DeliveryError
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import Record
from mailqueue_core.transport import Delivery, Transport

try:
    from django.utils.deprecation import RemovedInDjango2028Warning
except ImportError:  # Django < 6.1
    RemovedInDjango2028Warning = None  # type: ignore[assignment,misc]


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


@contextlib.contextmanager
def legacy_email_settings(**settings: object) -> Iterator[None]:
    """override_settings for EMAIL_* settings, which Django 6.1 deprecates.

    On 6.1 MAILERS is removed for the duration (EMAIL_* are unavailable beside
    it) and the deprecation warnings are silenced: these tests are about the
    pre-MAILERS configuration that sites still use.
    """
    from django.test import override_settings

    with warnings.catch_warnings():
        if RemovedInDjango2028Warning is not None:
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
        with override_settings(**settings):
            if django.VERSION >= (6, 1):
                from django.conf import settings as live

                del live.MAILERS
            yield


def django_smtp_backend(host: str = "localhost", port: int = 25, **options: object) -> Any:
    """Django's own SMTP backend with explicit options (as a 6.1 mailer would get them)."""
    from django.core.mail.backends.smtp import EmailBackend

    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "username": "",
        "password": "",
        "use_tls": False,
        "use_ssl": False,
        **options,
    }
    if django.VERSION >= (6, 1):
        kwargs["alias"] = "reference"
    return EmailBackend(**kwargs)
