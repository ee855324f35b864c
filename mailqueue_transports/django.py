"""Django transport: hand each message to any Django email backend.

What it is
    Rebuilds a Django ``EmailMessage`` from the stored record (subject,
    bodies, alternatives, attachments, headers, every recipient, and the
    attributes providers' backends read, such as anymail's ``tags``) and
    passes it to the backend named by ``BACKEND``, or, with Django 6.1's
    ``MAILERS``, to the mailer named by ``MAILER``.

URL format
    ``django:dotted.path.EmailBackend`` (for example
    ``django:anymail.backends.mailgun.EmailBackend``).

Options
    ``BACKEND`` (str, dotted path) or ``MAILER`` (str, a ``MAILERS`` alias);
    every other option is handed to the backend's constructor.

Capabilities and what it can lose
    What the wrapped backend reports is what the queue knows: a backend that
    swallows errors (``fail_silently``) or returns 0 is treated as a transient
    failure, never as delivered. The queueing backend itself cannot be
    wrapped (it would queue forever). A message retried for only some of its
    recipients is rebuilt with just those recipients in To/Cc/Bcc.
"""

from __future__ import annotations

import smtplib
from typing import Any

from django.core.mail import EmailMessage
from django.utils.module_loading import import_string

from mailqueue_core import convert
from mailqueue_core.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from mailqueue_core.message import QueuedMessage
from mailqueue_core.transport import Delivery, Transport
from mailqueue_transports.provider_errors import translate_provider_error
from mailqueue_transports.smtp_errors import translate_open_error, translate_send_error

__all__ = ["DjangoTransport"]

_HINT = "the wrapped Django email backend's settings"


def _refuse_self(cls: Any, where: str) -> None:
    from mailqueue_core.backend import EmailBackend

    if isinstance(cls, type) and issubclass(cls, EmailBackend):
        raise ConfigurationError(
            f"the django transport cannot wrap the queueing backend itself ({where}): "
            "mail would be queued again forever. Name the backend that really sends."
        )


class DjangoTransport(Transport):
    name = "django"

    def __init__(self, location: str = "", **options: Any) -> None:
        super().__init__(location)
        backend = options.pop("BACKEND", None)
        mailer = options.pop("MAILER", None)
        if location.startswith("django:"):
            backend = backend or location.split(":", 1)[1].lstrip("/") or None
        if bool(backend) == bool(mailer):
            raise ConfigurationError(
                "the django transport needs exactly one of BACKEND (a dotted path) "
                "or MAILER (a MAILERS alias)"
            )
        self.mailer = mailer
        self.options = options
        self.backend_path = backend
        if backend:
            try:
                self.backend_class = import_string(backend)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import email backend {backend!r}: {exc}"
                ) from exc
            _refuse_self(self.backend_class, backend)
        else:
            self._check_mailer(mailer)
        self.connection: Any = None

    @staticmethod
    def _check_mailer(alias: str) -> None:
        from django.conf import settings

        mailers = getattr(settings, "MAILERS", None)
        if mailers is None or alias not in mailers:
            raise ConfigurationError(f"MAILER {alias!r} is not in settings.MAILERS")
        path = mailers[alias].get("BACKEND", "django.core.mail.backends.smtp.EmailBackend")
        try:
            _refuse_self(import_string(path), f"MAILERS[{alias!r}]")
        except ImportError as exc:
            raise ConfigurationError(f"MAILERS[{alias!r}]: cannot import {path!r}") from exc

    def describe(self) -> str:
        return f"django {self.backend_path or 'mailer ' + str(self.mailer)}"

    def _build(self) -> Any:
        if self.mailer:
            from django.core.mail import mailers

            return mailers[self.mailer]
        return self.backend_class(**self.options)

    def open(self) -> None:
        if self.connection is not None:
            return
        connection = self._build()
        try:
            connection.open()
        except (smtplib.SMTPException, OSError) as exc:
            raise translate_open_error(exc, _HINT) from exc
        self.connection = connection

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.close()
            except (smtplib.SMTPException, OSError):
                pass

    def send(self, message: QueuedMessage) -> Delivery:
        email = convert.to_django(message)
        if set(message.recipients) != set(email.recipients()):
            _restrict(email, message.recipients)
        self.open()
        try:
            sent = self.connection.send_messages([email])
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise translate_send_error(exc) from exc
        except Exception as exc:
            error = translate_provider_error(exc)
            if error is None:
                raise
            raise error from exc
        if not sent:
            raise TransientError(f"{self.describe()} reported the message as not sent")
        status = getattr(email, "anymail_status", None)
        provider_id = getattr(status, "message_id", None) if status is not None else None
        return Delivery(
            refused=_refused_by_provider(status),
            transport=self.describe(),
            provider_id=None if provider_id is None else str(provider_id),
        )


def _refused_by_provider(status: Any) -> dict[str, DeliveryError]:
    """Recipients a provider took the message for but refused (anymail's statuses)."""
    recipients = getattr(status, "recipients", None) or {}
    return {
        address: PermanentError(f"provider status {recipient.status!r}")
        for address, recipient in recipients.items()
        if getattr(recipient, "status", None) in ("invalid", "rejected")
    }


def _restrict(email: EmailMessage, recipients: list[str]) -> None:
    """Keep only the envelope ``recipients`` (addresses compared as Django sends them)."""
    wanted = set(recipients)
    encoding = email.encoding or "utf-8"

    def keep(addresses: list[str]) -> list[str]:
        return [a for a in addresses if convert.envelope_address(a, encoding) in wanted]

    email.to, email.cc, email.bcc = keep(email.to), keep(email.cc), keep(email.bcc)
