"""Provider backends kept whole: anymail attributes survive the queue, errors are classified."""

from __future__ import annotations

import datetime
import logging
import uuid

import pytest
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from django.core import mail
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_routes
from mailqueue_core.signals import SignalListener, message_sent
from tests import anymail_backend

BACKEND = "django:tests.anymail_backend.EmailBackend"


@pytest.fixture
def conf():
    anymail_backend.EmailBackend.response = None
    c = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": BACKEND}
    with override_settings(MAILQUEUE=c, ANYMAIL={}):
        mail.outbox = []
        yield c
    anymail_backend.EmailBackend.response = None


def flush():
    config = get_config()
    store = get_store(config.store, config.namespace)
    transport = make_routes(config.transport, {})
    return Flusher(store, transport, policy=config.policy, listener=SignalListener()).flush()


def message() -> AnymailMessage:
    m = AnymailMessage("Receipt", "Thanks", "shop@example.com", ["a@example.com", "b@example.com"])
    m.tags = ["receipt"]
    m.metadata = {"order": 42}
    m.merge_data = {"a@example.com": {"name": "A"}}
    m.merge_global_data = {"shop": "S"}
    m.merge_metadata = {"a@example.com": {"x": 1}}
    m.merge_headers = {"a@example.com": {"X-A": "1"}}
    m.template_id = "tmpl-1"
    m.esp_extra = {"custom": True}
    m.envelope_sender = "bounces@example.com"
    m.track_clicks = True
    m.track_opens = False
    return m


def test_attributes_reach_the_provider_backend_and_its_id_is_recorded(conf, caplog):
    caplog.set_level(logging.INFO)
    heard = []
    message_sent.connect(lambda sender, **kw: heard.append(kw["provider_id"]), weak=False)
    try:
        assert EmailBackend().send_messages([message()]) == 1
        assert flush().sent == 1
    finally:
        message_sent.receivers.clear()
    (sent,) = mail.outbox
    params = sent.anymail_test_params
    assert params["tags"] == ["receipt"]
    assert params["metadata"] == {"order": 42}
    assert params["merge_data"] == {"a@example.com": {"name": "A"}}
    assert params["merge_global_data"] == {"shop": "S"}
    assert params["merge_metadata"] == {"a@example.com": {"x": 1}}
    assert params["merge_headers"] == {"a@example.com": {"X-A": "1"}}
    assert params["template_id"] == "tmpl-1"
    assert params["custom"] is True  # esp_extra merged by the test backend
    assert params["envelope_sender"] == "bounces@example.com"
    assert (params["track_clicks"], params["track_opens"]) == (True, False)
    assert "send_at" not in params  # the queue keeps the send time itself (test_schedule)
    assert heard == ["0"]
    assert any("provider id 0" in r.getMessage() for r in caplog.records)


class Response:
    reason = "test"

    def json(self):
        return {}

    text = ""


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (429, "deferred"),
        (503, "deferred"),
        (401, "deferred"),
        (403, "deferred"),
        (400, "buried"),
        (None, "deferred"),
    ],
)
def test_provider_errors_are_classified(conf, status, outcome):
    anymail_backend.EmailBackend.response = AnymailAPIError(
        "provider says no", status_code=status, response=Response() if status else None
    )
    EmailBackend().send_messages([message()])
    result = flush()
    assert getattr(result, outcome) == 1
    assert result.sent == 0


def test_account_problems_bury_nothing_even_when_old(conf, caplog):
    anymail_backend.EmailBackend.response = AnymailAPIError(
        "bad key", status_code=401, response=Response()
    )
    EmailBackend().send_messages([message()])
    config = get_config()
    store = get_store(config.store, config.namespace)
    old = Flusher(store, make_routes(config.transport, {}), clock=lambda: 2e9).flush()
    assert (old.deferred, old.buried) == (1, 0)
    assert any("API key" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.parametrize(
    ("statuses", "sent", "buried"),
    [
        ({"a@example.com": "sent", "b@example.com": "rejected"}, 1, 1),
        ({"a@example.com": "invalid", "b@example.com": "rejected"}, 0, 1),
    ],
)
def test_recipients_refused_by_the_provider(conf, statuses, sent, buried):
    from anymail.message import AnymailRecipientStatus

    class Partial(anymail_backend.EmailBackend):
        def parse_recipient_status(self, response, payload, message):
            return {
                address: AnymailRecipientStatus(message_id="m1", status=status)
                for address, status in statuses.items()
            }

    anymail_backend.Partial = Partial
    with override_settings(
        MAILQUEUE={"STORE": conf["STORE"], "TRANSPORT": "django:tests.anymail_backend.Partial"}
    ):
        EmailBackend().send_messages([message()])
        result = flush()
    assert (result.sent, result.buried) == (sent, buried)


def test_an_anymail_message_with_only_some_attributes_set(conf):
    m = AnymailMessage("Receipt", "Thanks", "shop@example.com", ["a@example.com"])
    m.tags = ["receipt"]  # the other anymail attributes stay anymail's UNSET
    assert EmailBackend().send_messages([m]) == 1
    assert flush().sent == 1
    (sent,) = mail.outbox
    assert sent.anymail_test_params["tags"] == ["receipt"]
    assert "metadata" not in sent.anymail_test_params


def test_the_queue_holds_a_send_time_and_the_provider_sends_at_once(conf):
    m = message()
    m.send_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    assert EmailBackend().send_messages([m]) == 1
    assert flush().sent == 0  # not before its time
    store = get_store(get_config().store, get_config().namespace)
    stats = store.stats(m.send_at.timestamp())
    assert (stats.ready, stats.scheduled) == (1, 0)
