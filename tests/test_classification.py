"""SMTP replies and exceptions, classified in the one place that reads them."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailqueue_core.errors import (
    ConnectError,
    PermanentError,
    SessionError,
    TransientError,
)
from mailqueue_transports.smtp_errors import (
    classify_reply,
    translate_open_error,
    translate_send_error,
)
from tests.helpers import ScriptedTransport


@pytest.mark.parametrize(
    ("code", "stage", "kind"),
    [
        (421, "mail", SessionError),
        (450, "rcpt", TransientError),
        (452, "rcpt", TransientError),
        (552, "rcpt", TransientError),
        (552, "mail", PermanentError),
        (550, "rcpt", PermanentError),
        (554, "data", PermanentError),
        (354, "data", TransientError),  # nonsense at that point: try again, do not bury
    ],
)
def test_replies(code, stage, kind):
    error = classify_reply(code, b"text", stage)
    assert type(error) is kind and error.code == code


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (smtplib.SMTPAuthenticationError(535, b"bad"), SessionError, "authentication failed"),
        (smtplib.SMTPHeloError(501, b"no"), SessionError, "session refused"),
        (smtplib.SMTPNotSupportedError("STARTTLS"), SessionError, "STARTTLS"),
        (ssl.SSLCertVerificationError("verify failed"), SessionError, "TLS failed"),
        (smtplib.SMTPServerDisconnected("bye"), ConnectError, "disconnected"),
        (TimeoutError("slow"), ConnectError, "timed out"),
        (ConnectionRefusedError(111, "refused"), ConnectError, "cannot connect"),
        (smtplib.SMTPException("odd"), SessionError, "odd"),
    ],
)
def test_open_errors(exc, kind, text):
    error = translate_open_error(exc, "the settings")
    assert type(error) is kind and text in str(error)


def test_open_errors_name_the_options_that_fix_them():
    hints = {"auth_hint": "the login options", "tls_hint": "the CA option"}
    auth = translate_open_error(smtplib.SMTPAuthenticationError(535, b"bad"), "x", **hints)
    assert str(auth) == "authentication failed (535 bad); check the login options"
    none = smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    assert "check the login options" in str(translate_open_error(none, "x", **hints))
    assert str(translate_open_error(none, "x")).endswith("check x")
    cert = ssl.SSLCertVerificationError("certificate verify failed")
    assert str(translate_open_error(cert, "x", **hints)).endswith("check the CA option")
    other = ssl.SSLError("wrong version number")
    assert str(translate_open_error(other, "x", **hints)).endswith("check x")


def test_open_error_that_is_not_smtp_is_raised():
    with pytest.raises(KeyError):
        translate_open_error(KeyError("bug"), "x")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (551, b"no")}),
            PermanentError,
        ),
        (
            smtplib.SMTPRecipientsRefused({"a@x": (451, b"later"), "b@x": (550, b"no")}),
            TransientError,
        ),
        (smtplib.SMTPRecipientsRefused({"a@x": (421, b"closing")}), SessionError),
        (smtplib.SMTPSenderRefused(553, b"bad sender", "s@x"), PermanentError),
        (smtplib.SMTPDataError(451, b"later"), TransientError),
        (smtplib.SMTPServerDisconnected("gone"), TransientError),
        (smtplib.SMTPResponseException(452, b"full"), TransientError),
        (TimeoutError("slow"), TransientError),
        (BrokenPipeError(32, "pipe"), TransientError),
        (smtplib.SMTPException("odd"), TransientError),
    ],
)
def test_send_errors(exc, kind):
    assert type(translate_send_error(exc)) is kind


def test_send_error_that_is_not_smtp_is_raised():
    with pytest.raises(KeyError):
        translate_send_error(KeyError("bug"))


def test_transport_as_a_context_manager_closes_when_open_fails():
    closed = []

    class Failing(ScriptedTransport):
        def close(self):
            closed.append(True)

    transport = Failing()
    transport.open_error = ConnectError("down")
    with pytest.raises(ConnectError), transport:
        pass
    assert closed == [True]
    ok = Failing()
    with ok as same:
        assert same is ok
    assert closed == [True, True]
    assert ok.describe() == "scripted"
