"""The queueing backend, driven through django.core.mail as a site would."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_store
from mailqueue_core.errors import ConfigurationError, MessageTooLarge, StoreUnavailable
from mailqueue_core.signals import message_queued
from tests.helpers import django_smtp_backend


def queue_settings(**extra):
    return {"STORE": f"memory://{uuid.uuid4().hex}", **extra}


def backend(**kwargs) -> EmailBackend:
    # Django's test runner swaps EMAIL_BACKEND; build the queueing backend explicitly.
    return EmailBackend(**kwargs)


def queued(conf):
    store = get_store(conf["STORE"], conf.get("NAMESPACE", "default"))
    return [codec.decode(c.record) for c in store.fetch_due(2e9, 1000, 30)]


def test_send_mail_queues_and_returns_count():
    conf = queue_settings()
    with override_settings(MAILQUEUE=conf):
        sent = backend().send_messages(
            [EmailMessage("Receipt", "Thanks", "shop@example.com", ["a@example.com"])]
        )
        assert sent == 1
        (msg,) = queued(conf)
    assert msg.subject == "Receipt"
    assert msg.recipients == ["a@example.com"]
    assert msg.message_id and msg.headers["Date"]


def test_envelope_has_bcc_and_headers_do_not():
    conf = queue_settings()
    with override_settings(MAILQUEUE=conf):
        m = EmailMessage(
            "S",
            "B",
            "Shop <shop@example.com>",
            ["To <to@example.com>"],
            cc=["cc@example.com"],
            bcc=["hidden@example.com"],
        )
        backend().send_messages([m])
        (msg,) = queued(conf)
    # As Django's SMTP backend gives them to smtplib (4.2/5.2 keep the display name).
    assert msg.envelope_from in ("shop@example.com", "Shop <shop@example.com>")
    assert msg.recipients[1:] == ["cc@example.com", "hidden@example.com"]
    assert not any(h.lower() == "bcc" for h in msg.headers)


def test_no_recipients_queues_nothing():
    conf = queue_settings()
    with override_settings(MAILQUEUE=conf):
        assert backend().send_messages([EmailMessage("S", "B", "a@example.com", [])]) == 0
        assert backend().send_messages([]) == 0
        assert queued(conf) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: EmailMessage(
            "Hi\nBcc: victim@example.com", "B", "a@example.com", ["b@example.com"]
        ),
        lambda: EmailMessage("Hi", "B", "a@example.com\nBcc: v@example.com", ["b@example.com"]),
        lambda: EmailMessage("Hi", "B", "a@example.com", ["b@example.com\r\nBcc: v@example.com"]),
        lambda: EmailMessage(
            "Hi",
            "B",
            "a@example.com",
            ["b@example.com"],
            headers={"X-Evil": "x\nBcc: v@example.com"},
        ),
    ],
)
def test_header_injection_fails_like_django_and_queues_nothing(make):
    class Capture:
        def sendmail(self, *args):
            raise AssertionError("Django would not send this")

    reference = django_smtp_backend()
    reference.connection = Capture()
    with pytest.raises(ValueError) as django_error:
        reference._send(make())
    conf = queue_settings()
    with override_settings(MAILQUEUE=conf):
        with pytest.raises(ValueError) as ours:
            backend().send_messages([make()])
        assert queued(conf) == []
    assert type(ours.value) is type(django_error.value)
    assert str(ours.value) == str(django_error.value)


def test_message_over_max_size_fails_with_size_and_limit():
    conf = queue_settings(MAX_MESSAGE_SIZE=1000)
    with override_settings(MAILQUEUE=conf):
        with pytest.raises(MessageTooLarge, match="over MAILQUEUE\\['MAX_MESSAGE_SIZE'\\] = 1000"):
            backend().send_messages([EmailMessage("S", "x" * 5000, "a@x.com", ["b@x.com"])])
        assert queued(conf) == []


def test_store_down_raises_store_unavailable_and_logs(caplog, unused_tcp_port):
    conf = {"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0"}
    with override_settings(MAILQUEUE=conf):
        with pytest.raises(StoreUnavailable) as info:
            backend().send_messages([EmailMessage("S", "B", "a@x.com", ["rcpt@x.com"])])
        assert info.value.__cause__ is not None
        assert (
            backend(fail_silently=True).send_messages(
                [EmailMessage("S", "B", "a@x.com", ["rcpt@x.com"])]
            )
            == 0
        )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rcpt@x.com" in e for e in errors)


def test_fallback_store_takes_mail_when_store_is_down(caplog, unused_tcp_port):
    fallback = f"memory://{uuid.uuid4().hex}"
    conf = {"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0", "FALLBACK_STORE": fallback}
    with override_settings(MAILQUEUE=conf):
        assert backend().send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])]) == 1
        (msg,) = queued({"STORE": fallback})
    assert msg.recipients == ["r@x.com"]
    assert any(
        r.levelno == logging.WARNING and "fallback" in r.getMessage() for r in caplog.records
    )


def test_signal_message_queued():
    heard = []

    def receiver(sender, message_id, recipients, **kwargs):
        heard.append((message_id, recipients))

    message_queued.connect(receiver)
    try:
        conf = queue_settings()
        with override_settings(MAILQUEUE=conf):
            backend().send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])])
            (msg,) = queued(conf)
    finally:
        message_queued.disconnect(receiver)
    assert heard == [(msg.id, ["r@x.com"])]


def test_backend_options_override_settings():
    store = f"memory://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE=queue_settings()):
        b = backend(store=store, namespace="other")
        b.send_messages([EmailMultiAlternatives("S", "B", "a@x.com", ["r@x.com"])])
        (msg,) = queued({"STORE": store, "NAMESPACE": "other"})
    assert msg.multipart


def test_missing_setting_is_a_configuration_error():
    with (
        override_settings(MAILQUEUE=None),
        pytest.raises(ConfigurationError, match=r"MAILQUEUE is not set|STORE'\] is required"),
    ):
        backend().send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])])


def test_sending_works_without_the_app_installed():
    conf = queue_settings()
    with override_settings(INSTALLED_APPS=[], MAILQUEUE=conf):
        assert backend().send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])]) == 1
        (msg,) = queued(conf)
    assert msg.recipients == ["r@x.com"]
