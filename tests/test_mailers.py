"""Django 6.1's MAILERS: the queue as a mailer, its transport another mailer by alias.

On Django < 6.1 (no MAILERS) the same options go through the backend's
constructor, which is what MAILERS does for us on 6.1.
"""

from __future__ import annotations

import uuid

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_transport

HAS_MAILERS = hasattr(mail, "mailers")
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def mailers():
    store = f"memory://{uuid.uuid4().hex}"
    conf = {
        "default": {
            "BACKEND": "mailqueue_core.backend.EmailBackend",
            "OPTIONS": {
                "store": store,
                "transport": {"NAME": "django", "OPTIONS": {"MAILER": "relay"}},
            },
        },
        "relay": {"BACKEND": LOCMEM},
    }
    with override_settings(MAILERS=conf, MAILQUEUE=None):
        mail.outbox = []
        yield store


def queue_backend(options):
    if HAS_MAILERS:
        return mail.mailers["default"]
    return EmailBackend(**options)


def test_queue_as_a_mailer_delivers_through_another_mailer(mailers):
    options = {"store": mailers}
    backend = queue_backend(options)
    assert isinstance(backend, EmailBackend)
    assert backend.send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])]) == 1
    assert mail.outbox == []
    config = get_config()
    assert config.store == mailers
    if HAS_MAILERS:
        transport = make_transport(config.transport)
    else:
        transport = make_transport(f"django:{LOCMEM}")
    result = Flusher(get_store(config.store, config.namespace), transport).flush()
    assert result.sent == 1
    assert [m.to for m in mail.outbox] == [["r@x.com"]]


@pytest.mark.parametrize("option", ["colour", "fail_silentlyy"])
def test_unknown_mailer_options_are_rejected(option):
    if HAS_MAILERS:
        from django.core.mail import InvalidMailer

        conf = {
            "default": {
                "BACKEND": "mailqueue_core.backend.EmailBackend",
                "OPTIONS": {"store": "memory://", option: 1},
            }
        }
        with override_settings(MAILERS=conf), pytest.raises(InvalidMailer, match=option):
            mail.mailers["default"]
    else:
        # Django < 6.1 ignores unknown backend options by design; ours are still read.
        backend = EmailBackend(store="memory://", **{option: 1})
        assert backend.config.store == "memory://"


def test_mailer_options_and_mailqueue_merge_for_the_flusher():
    conf = {
        "default": {
            "BACKEND": "mailqueue_core.backend.EmailBackend",
            "OPTIONS": {"store": "memory://from-mailer", "fail_silently": True},
        }
    }
    with override_settings(MAILERS=conf, MAILQUEUE={"STORE": "memory://x", "BATCH_SIZE": 7}):
        config = get_config()
    assert (config.store, config.batch_size) == ("memory://from-mailer", 7)
