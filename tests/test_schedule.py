"""Send times and expiries: send_at / expires_at, and their headers."""

from __future__ import annotations

import datetime
import io
import time
import uuid
import zoneinfo

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test import override_settings

from mailqueue_core import codec, convert
from mailqueue_core.backend import EmailBackend
from mailqueue_core.errors import TransientError
from mailqueue_core.flusher import Flusher
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.schedule import moment
from mailqueue_core.store import State
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport

UTC = datetime.timezone.utc
NOON = datetime.datetime(2026, 12, 24, 12, 0, tzinfo=UTC)


def test_moments_in_every_form():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    assert moment(NOON, "send_at") == NOON.timestamp()
    assert moment(NOON.astimezone(paris), "send_at") == NOON.timestamp()
    assert moment(1_800_000_000, "send_at") == 1_800_000_000.0
    assert moment("1800000000.5", "h") == 1_800_000_000.5
    assert moment("2026-12-24T12:00:00Z", "h") == NOON.timestamp()
    assert moment("2026-12-24T13:00:00+01:00", "h") == NOON.timestamp()
    assert moment("Thu, 24 Dec 2026 12:00:00 +0000", "h") == NOON.timestamp()
    with override_settings(USE_TZ=True, TIME_ZONE="Europe/Paris"):
        naive = datetime.datetime(2026, 12, 24, 13, 0)
        assert moment(naive, "send_at") == NOON.timestamp()  # read in the current zone
        midnight = datetime.datetime(2026, 12, 24, tzinfo=paris).timestamp()
        assert moment(datetime.date(2026, 12, 24), "send_at") == midnight


@pytest.mark.parametrize("value", ["next tuesday", float("nan"), True, object(), [1]])
def test_a_bad_moment_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="send_at must be"):
        moment(value, "send_at")


@pytest.fixture
def queue():
    name = uuid.uuid4().hex
    settings = {"STORE": f"memory://{name}", "MAX_AGE": 3600}
    with override_settings(MAILQUEUE=settings):
        yield MemoryStore(f"memory://{name}")


def receipt(**headers) -> EmailMessage:
    return EmailMessage(
        "Receipt", "Thanks", "shop@example.com", ["a@example.com"], headers=headers
    )


def test_a_message_waits_for_its_send_time_and_max_age_counts_from_then(queue):
    later = datetime.datetime.now(UTC) + datetime.timedelta(days=2)
    message = receipt()
    message.send_at = later
    EmailBackend().send_messages([message])
    stats = queue.stats(later.timestamp() - 1)
    assert (stats.ready, stats.scheduled) == (0, 1)
    (entry,) = queue.browse(State.SCHEDULED, 0.0).entries
    assert entry.record.due == entry.record.created == pytest.approx(later.timestamp())
    assert "send_at" not in codec.decode(entry.record).extra  # never passed on to a provider
    # Sent at its time; a transient failure then is retried, though it was queued
    # two days (more than MAX_AGE) before.
    clock = Clock(later.timestamp() + 1)
    policy = RetryPolicy(max_age=3600)

    def refuse(m):
        raise TransientError("451 try later")

    result = Flusher(queue, ScriptedTransport(refuse), clock=clock, policy=policy).flush()
    assert (result.deferred, result.buried) == (1, 0)


def test_the_headers_work_too_and_are_stripped(queue):
    send_at = "2999-01-01T00:00:00Z"
    message = receipt(**{"X-Mailqueue-Send-At": send_at, "X-Mailqueue-Expires-At": "32503680060"})
    queued = convert.capture(message)
    assert queued.send_at == moment(send_at, "h") and queued.expires == 32503680060.0
    assert not any(name.lower().startswith("x-mailqueue") for name in queued.headers)
    # The attribute wins over the header.
    message.send_at = 4_000_000_000
    assert convert.capture(message).send_at == 4_000_000_000.0


def test_a_bad_send_time_fails_the_send_as_a_bad_header_would(queue):
    message = receipt(**{"X-Mailqueue-Send-At": "soon"})
    with pytest.raises(ValueError, match="send_at \\(or the X-Mailqueue-Send-At header\\)"):
        EmailBackend().send_messages([message])
    assert queue.stats(0).scheduled == 0


def test_an_expired_message_is_buried_not_sent(queue):
    now = time.time()
    message = receipt()
    message.expires_at = now + 60
    EmailBackend().send_messages([message])
    (entry,) = queue.browse(State.READY, now + 1).entries
    assert codec.decode(entry.record).expires == now + 60
    transport = ScriptedTransport()
    result = Flusher(queue, transport, clock=Clock(now + 120)).flush()
    assert transport.sent == [] and result.buried == 1
    (dead,) = queue.dead_letters()
    assert dead.reason.startswith("expired: not sent before its expiry (")


def test_a_message_within_its_expiry_is_sent(queue):
    message = receipt()
    message.expires_at = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    EmailBackend().send_messages([message])
    transport = ScriptedTransport()
    assert Flusher(queue, transport).flush().sent == 1


def test_list_and_status_show_scheduled_mail(queue):
    message = receipt()
    message.send_at = datetime.datetime.now(UTC) + datetime.timedelta(hours=3)
    EmailBackend().send_messages([message])
    out = io.StringIO()
    call_command("mailqueue", "list", "--state", "scheduled", stdout=out)
    assert "due in 2h" in out.getvalue() or "due in 3h" in out.getvalue()
    out = io.StringIO()
    call_command("mailqueue", "status", stdout=out)
    assert "scheduled    1" in out.getvalue()
