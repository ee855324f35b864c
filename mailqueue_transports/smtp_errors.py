"""SMTP failures classified as an MTA would: the one place that reads reply codes.

- 421 anywhere: the server is closing the session: :class:`SessionError`.
- Failures before any message is sent (greeting, EHLO, STARTTLS, AUTH, TLS
  certificate): the site's configuration or the server's state:
  :class:`SessionError`, which defers the batch and buries nothing.
- Cannot connect (refused, timeout, DNS): :class:`ConnectError`.
- 4xx to a message, and 552 at RCPT TO (RFC 5321 section 4.5.3.1.10 says to
  treat it as temporary): :class:`TransientError`.
- Other 5xx to a message (MAIL FROM, RCPT TO, DATA): :class:`PermanentError`.
- A disconnect or timeout while sending: the server may or may not have taken
  the message (after the final dot nobody can tell): :class:`TransientError`;
  the Message-ID fixed at enqueue lets a duplicate be recognised.
"""

from __future__ import annotations

import smtplib
import ssl

from mailqueue_core.errors import (
    ConnectError,
    DeliveryError,
    PermanentError,
    SessionError,
    TransientError,
)

__all__ = ["classify_reply", "translate_open_error", "translate_send_error"]


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply


def classify_reply(code: int, reply: bytes | str, stage: str) -> DeliveryError:
    """The error for SMTP reply ``code`` at ``stage`` ("mail", "rcpt" or "data")."""
    message = f"{code} {_text(reply)}".strip()
    if code == 421:
        return SessionError(f"server closed the session at {stage}: {message}", code=code)
    if 400 <= code < 500 or (code == 552 and stage == "rcpt"):
        return TransientError(message, code=code)
    if 500 <= code < 600:
        return PermanentError(message, code=code)
    return TransientError(f"unexpected reply at {stage}: {message}", code=code)


def translate_open_error(
    exc: BaseException,
    hint: str,
    *,
    auth_hint: str | None = None,
    tls_hint: str | None = None,
) -> DeliveryError:
    """An exception raised while opening the session, classified.

    ``hint`` names the settings to check; ``auth_hint`` and ``tls_hint``, when
    given, name the options that fix a refused login and a server certificate
    that does not verify. None of them ever holds a credential.
    """
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SessionError(
            f"authentication failed ({exc.smtp_code} {_text(exc.smtp_error)}); "
            f"check {auth_hint or hint}",
            code=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return SessionError(
            f"session refused ({exc.smtp_code} {_text(exc.smtp_error)}); check {hint}",
            code=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        if auth_hint and "AUTH" in str(exc):
            return SessionError(
                f"{exc}: the server offers no login (many offer it only after STARTTLS); "
                f"check {auth_hint}"
            )
        return SessionError(f"{exc}; check {hint}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SessionError(
            f"TLS failed: the server's certificate did not verify ({exc}); "
            f"check {tls_hint or hint}"
        )
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return SessionError(f"TLS failed: {exc}; check {hint}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return ConnectError(f"server disconnected while opening the session: {exc}")
    if isinstance(exc, smtplib.SMTPException):  # before OSError, its base class
        return SessionError(f"{type(exc).__name__}: {exc}; check {hint}")
    if isinstance(exc, TimeoutError):
        return ConnectError(f"timed out connecting: {exc}")
    if isinstance(exc, OSError):
        return ConnectError(f"cannot connect: {exc}")
    raise exc


def translate_send_error(exc: BaseException) -> DeliveryError:
    """An exception raised while sending one message, classified."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        errors = {
            rcpt: classify_reply(code, reply, "rcpt")
            for rcpt, (code, reply) in exc.recipients.items()
        }
        detail = "; ".join(f"{rcpt}: {err}" for rcpt, err in errors.items())
        if 421 in codes:
            return SessionError(f"server closed the session at RCPT TO: {detail}", code=421)
        if any(isinstance(e, TransientError) for e in errors.values()):
            return TransientError(f"all recipients refused: {detail}", code=min(codes))
        return PermanentError(f"all recipients refused: {detail}", code=max(codes))
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return classify_reply(exc.smtp_code, exc.smtp_error, "mail")
    if isinstance(exc, smtplib.SMTPDataError):
        return classify_reply(exc.smtp_code, exc.smtp_error, "data")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(f"server disconnected while sending: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return classify_reply(exc.smtp_code, exc.smtp_error, "data")
    if isinstance(exc, smtplib.SMTPException):  # before OSError, its base class
        return TransientError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, TimeoutError):
        return TransientError(f"timed out while sending: {exc}")
    if isinstance(exc, OSError):
        return TransientError(f"connection failed while sending: {exc}")
    raise exc
