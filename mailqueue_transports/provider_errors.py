"""Errors of email-provider backends (django-anymail), classified.

The one place that reads a provider's answer, as :mod:`smtp_errors` is for
SMTP replies:

- 429 (rate limited) and 5xx: the provider's trouble: :class:`TransientError`.
- 401 and 403: a bad API key or a suspended account: the site's
  configuration, the same for every message: :class:`SessionError` (the batch
  is deferred, nothing is buried).
- a configuration error of the backend: :class:`SessionError` too.
- no HTTP status (the request did not get through): :class:`ConnectError`.
- other 4xx, refused recipients, invalid addresses, an unsupported feature:
  the message's own: :class:`PermanentError`.

anymail is optional: without it nothing here matches.
"""

from __future__ import annotations

from mailqueue_core.errors import (
    ConnectError,
    DeliveryError,
    PermanentError,
    SessionError,
    TransientError,
)

__all__ = ["translate_provider_error"]


def _describe(exc: BaseException, code: int | None) -> str:
    # str() of an anymail error may read the HTTP response; the first
    # argument is its own summary and holds no credentials.
    summary = str(exc.args[0]) if exc.args else type(exc).__name__
    status = f" (HTTP {code})" if code is not None else ""
    return f"{type(exc).__name__}{status}: {summary}"


def translate_provider_error(exc: BaseException) -> DeliveryError | None:
    """The classified error for a provider backend's exception, or None if not one."""
    try:
        from anymail import exceptions as anymail
    except ImportError:  # pragma: no cover - anymail is in the test extra
        return None
    if isinstance(exc, anymail.AnymailConfigurationError):
        return SessionError(f"{_describe(exc, None)}; check the provider backend's settings")
    if not isinstance(exc, anymail.AnymailError):
        return None
    code = exc.status_code
    text = _describe(exc, code)
    if isinstance(exc, anymail.AnymailRecipientsRefused | anymail.AnymailInvalidAddress):
        return PermanentError(text, code=code)
    if isinstance(exc, anymail.AnymailUnsupportedFeature | anymail.AnymailSerializationError):
        return PermanentError(text, code=code)
    if code is None:
        return ConnectError(text)
    if code in (401, 403):
        return SessionError(f"{text}; check the API key and the account", code=code)
    if code == 429 or code >= 500:
        return TransientError(text, code=code)
    return PermanentError(text, code=code)
