"""SMTP transport: smtplib on one connection per batch.

What it is
    Sends each message as Django's own SMTP backend would (same envelope, same
    bytes), but keeps one connection open for the whole batch and classifies
    every failure (see :mod:`mailqueue_transports.smtp_errors`).

URL format
    ``smtp://[user[:password]@]host[:port][?starttls=true|ssl=true&timeout=10]``;
    user and password are percent-decoded. Plain ``smtp`` (no URL) takes
    every default from Django's settings.

Options
    Declared in :class:`SMTPOptions` (the table in the docs is generated from
    it): ``host``, ``port``, ``username``, ``password``, ``starttls``, ``ssl``,
    ``timeout``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cafile``, ``verify``,
    ``local_hostname``. Those left unset take Django's ``EMAIL_*`` setting where
    the site configured it, else the built-in default.

Capabilities and what it can lose
    Nothing: a message leaves the queue only after the server's 250 to DATA.
    A disconnect after the final dot may mean a duplicate (the server may have
    taken it); the fixed Message-ID lets receivers recognise it. A server's
    recipient limit (``452`` after N RCPTs) is met by sending the rest at once
    in new transactions on the same session
    (:mod:`mailqueue_transports.smtp_transactions`); the message is acked after
    the last one.
"""

from __future__ import annotations

import dataclasses
import smtplib
import ssl
from typing import Any

from mailqueue_core import convert
from mailqueue_core.errors import (
    ConfigurationError,
    PermanentError,
    TransientError,
)
from mailqueue_core.locations import parse_bool, parse_url
from mailqueue_core.message import QueuedMessage
from mailqueue_core.options import (
    BOOLEAN,
    POSITIVE_INT,
    SECONDS,
    TEXT,
    Kind,
    option,
    optional,
    read_declared,
)
from mailqueue_core.transport import Delivery, Transport
from mailqueue_transports.smtp_errors import (
    classify_reply,
    translate_open_error,
    translate_send_error,
)
from mailqueue_transports.smtp_transactions import send_in_transactions

__all__ = ["SMTPOptions", "SMTPTransport"]


def _any_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


_ANY_TEXT = Kind("text", _any_text)
_PORT = Kind("port (1-65535)", lambda v: _port(v))


def _port(value: object) -> int:
    number = POSITIVE_INT.parse(value)
    if number > 65535:
        raise ValueError("must be a port, 1 to 65535")
    return int(number)


@dataclasses.dataclass(frozen=True)
class SMTPOptions:
    """The smtp transport's options; unset ones come from Django's ``EMAIL_*`` settings."""

    host: str | None = option(
        None, optional(TEXT), "the server; default EMAIL_HOST, else localhost"
    )
    port: int | None = option(
        None, optional(_PORT), "default EMAIL_PORT, else 465 with ssl and 25 without"
    )
    username: str | None = option(None, optional(_ANY_TEXT), "default EMAIL_HOST_USER")
    password: str | None = option(None, optional(_ANY_TEXT), "default EMAIL_HOST_PASSWORD")
    starttls: bool | None = option(
        None, optional(BOOLEAN), "STARTTLS after EHLO; default EMAIL_USE_TLS"
    )
    ssl: bool | None = option(None, optional(BOOLEAN), "TLS from the start; default EMAIL_USE_SSL")
    timeout: float | None = option(
        None, optional(SECONDS), "seconds per socket operation; default EMAIL_TIMEOUT, else 30"
    )
    ssl_certfile: str | None = option(
        None, optional(TEXT), "client certificate; default EMAIL_SSL_CERTFILE"
    )
    ssl_keyfile: str | None = option(
        None, optional(TEXT), "its private key; default EMAIL_SSL_KEYFILE"
    )
    ssl_cafile: str | None = option(
        None, optional(TEXT), "CA bundle to trust for the server's certificate"
    )
    verify: bool = option(
        True, BOOLEAN, "check the server's certificate; false turns off what TLS protects"
    )
    local_hostname: str | None = option(None, optional(TEXT), "the name sent in EHLO")


_SETTINGS = {
    "host": ("EMAIL_HOST", "localhost"),
    "port": ("EMAIL_PORT", None),
    "username": ("EMAIL_HOST_USER", ""),
    "password": ("EMAIL_HOST_PASSWORD", ""),
    "starttls": ("EMAIL_USE_TLS", False),
    "ssl": ("EMAIL_USE_SSL", False),
    "timeout": ("EMAIL_TIMEOUT", None),
    "ssl_certfile": ("EMAIL_SSL_CERTFILE", None),
    "ssl_keyfile": ("EMAIL_SSL_KEYFILE", None),
}
_HINT = (
    "the SMTP settings (EMAIL_HOST, EMAIL_PORT, EMAIL_USE_TLS/SSL, "
    "EMAIL_HOST_USER, EMAIL_HOST_PASSWORD)"
)
_AUTH_HINT = (
    "the smtp transport's username and password options (user:password@ in its URL, "
    "or OPTIONS; EMAIL_HOST_USER and EMAIL_HOST_PASSWORD when it takes Django's settings)"
)
_TLS_HINT = (
    "the smtp transport's ssl_cafile option (the CA bundle that issued the server's "
    "certificate) and host (the name the certificate was issued for); verify=false "
    "turns the check off, and with it the protection TLS gives"
)


def _django_defaults() -> dict[str, Any]:
    """The EMAIL_* settings a site set explicitly.

    Only explicit ones: Django 6.1 deprecates these settings (reading one
    warns) and hides them once ``MAILERS`` is defined; their defaults are ours.
    """
    from django.conf import settings

    if not settings.configured or getattr(settings, "MAILERS", None) is not None:
        return {}
    return {
        name: getattr(settings, setting)
        for name, (setting, _) in _SETTINGS.items()
        if settings.is_overridden(setting)
    }


class SMTPTransport(Transport):
    name = "smtp"

    def __init__(self, location: str = "", **options: Any) -> None:
        super().__init__(location)
        query: dict[str, Any] = {}
        if location and location != "smtp":
            url = parse_url(location, schemes=("smtp",))
            query.update(url.options())
            for name, value in (
                ("host", url.host),
                ("port", url.port),
                ("username", url.username),
                ("password", url.password),
            ):
                if value:
                    query[name] = value
        declared = read_declared(SMTPOptions, "smtp transport", query, options)
        conf = {f.name: getattr(declared, f.name) for f in dataclasses.fields(SMTPOptions)}
        defaults = _django_defaults()
        for name, (_, fallback) in _SETTINGS.items():
            if conf[name] is None:
                conf[name] = defaults.get(name)
            if conf[name] is None:
                conf[name] = fallback
        self.host = str(conf["host"])
        self.use_tls = parse_bool(conf["starttls"], "starttls")
        self.use_ssl = parse_bool(conf["ssl"], "ssl")
        if self.use_tls and self.use_ssl:
            raise ConfigurationError("smtp: starttls and ssl are mutually exclusive")
        port = conf["port"] or (465 if self.use_ssl else 25)
        try:
            self.port = int(port)
            self.timeout: float = 30.0 if conf["timeout"] is None else float(conf["timeout"])
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"smtp: bad port or timeout: {exc}") from None
        self.username = str(conf["username"] or "")
        self.password = str(conf["password"] or "")
        self.verify = bool(conf["verify"])
        self.certfile = conf["ssl_certfile"]
        self.keyfile = conf["ssl_keyfile"]
        self.cafile = conf["ssl_cafile"]
        self.local_hostname = conf["local_hostname"]
        self.connection: smtplib.SMTP | None = None
        self._prepared: tuple[str, bytes] | None = None

    def describe(self) -> str:
        security = "ssl" if self.use_ssl else "starttls" if self.use_tls else "plain"
        return f"smtp {self.host}:{self.port} ({security})"

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def open(self) -> None:
        if self.connection is not None:
            return
        connection: smtplib.SMTP | None = None
        try:
            if self.use_ssl:
                connection = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._ssl_context(),
                )
            else:
                connection = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            # Greet now, not lazily inside the first sendmail(): a refusal here
            # is the session's, and must not be charged to a message.
            _greet(connection)
            if self.use_tls and not self.use_ssl:
                connection.starttls(context=self._ssl_context())
            if self.username and self.password:
                connection.login(self.username, self.password)
        except (smtplib.SMTPException, OSError) as exc:
            if connection is not None:
                _quietly_close(connection)
            raise translate_open_error(
                exc, _HINT, auth_hint=_AUTH_HINT, tls_hint=_TLS_HINT
            ) from exc
        self.connection = connection

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            _quietly_close(connection)

    def prepare(self, message: QueuedMessage) -> None:
        try:
            self._prepared = (message.id, convert.render(message))
        except Exception:  # send() renders again and reports it
            self._prepared = None

    def send(self, message: QueuedMessage) -> Delivery:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == message.id:
            data = prepared[1]
        else:
            data = convert.render(message)
        self.open()
        assert self.connection is not None
        try:
            outcome = send_in_transactions(
                self.connection, message.envelope_from, message.recipients, data
            )
        except smtplib.SMTPRecipientsRefused as exc:
            errors = {
                rcpt: classify_reply(code, reply, "rcpt")
                for rcpt, (code, reply) in exc.recipients.items()
            }
            kinds = {type(e) for e in errors.values()}
            if len(kinds) > 1 and kinds <= {TransientError, PermanentError}:
                # Some may succeed later, some never: the flusher splits them.
                return Delivery(refused=errors, transport=self.describe())
            raise translate_send_error(exc) from exc
        except (smtplib.SMTPException, OSError) as exc:
            error = translate_send_error(exc)
            if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
                self.close()
            raise error from exc
        if outcome.session_lost:
            self.close()
        return Delivery(refused=outcome.refused, transport=self.describe())


def _greet(connection: smtplib.SMTP) -> None:
    code, reply = connection.ehlo()
    if code == 421:
        raise smtplib.SMTPHeloError(code, reply)
    if not 200 <= code < 300:
        code, reply = connection.helo()
        if not 200 <= code < 300:
            raise smtplib.SMTPHeloError(code, reply)


def _quietly_close(connection: smtplib.SMTP) -> None:
    try:
        connection.close()
    except OSError:
        pass
