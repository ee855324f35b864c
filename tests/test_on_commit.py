"""ON_COMMIT: mail sent inside a transaction is queued only when it commits."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.core.mail import EmailMessage
from django.db import transaction
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_store
from mailqueue_core.errors import ConfigurationError


@pytest.fixture
def conf():
    c = {"STORE": f"memory://{uuid.uuid4().hex}", "ON_COMMIT": True}
    with override_settings(MAILQUEUE=c):
        yield c


def queued(conf) -> list[str]:
    store = get_store(conf["STORE"], "default")
    claims = store.fetch_due(2e9, 100, 1)
    for claim in claims:
        store.release(claim)
    return [codec.decode(c.record).subject for c in claims]


def send(subject: str) -> int:
    return EmailBackend().send_messages([EmailMessage(subject, "B", "a@x.com", ["r@x.com"])])


def test_rolled_back_transaction_sends_nothing(conf):
    with pytest.raises(RuntimeError), transaction.atomic():
        assert send("order 1") == 1
        raise RuntimeError("payment failed")
    assert queued(conf) == []


def test_committed_transaction_queues_at_commit(conf):
    with transaction.atomic():
        send("order 2")
        assert queued(conf) == []  # not before the commit
    assert queued(conf) == ["order 2"]


def test_outside_a_transaction_queues_at_once(conf):
    send("no transaction")
    assert queued(conf) == ["no transaction"]


def test_store_down_at_commit_is_logged_not_raised(caplog, unused_tcp_port):
    c = {"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0", "ON_COMMIT": "default"}
    with override_settings(MAILQUEUE=c), transaction.atomic():
        send("doomed")
    assert any(r.levelno == logging.ERROR and "r@x.com" in r.getMessage() for r in caplog.records)


def test_bad_on_commit_setting():
    with (
        override_settings(MAILQUEUE={"STORE": "memory://", "ON_COMMIT": 3}),
        pytest.raises(ConfigurationError, match="ON_COMMIT"),
    ):
        send("x")


def test_check_warns_about_on_commit_without_fallback(tmp_path):
    from django.core.checks import run_checks

    with override_settings(
        MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/queue.db", "ON_COMMIT": True}
    ):
        assert [m.id for m in run_checks(tags=["mailqueue"])] == ["mailqueue.W003"]
