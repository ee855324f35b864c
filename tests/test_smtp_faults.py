"""The fault matrix: the real flusher, the smtp transport, a misbehaving SMTP server.

Each case says where every message ended up: delivered once, requeued (with
its due time), or buried with the reason. Time is injected: the 24-hour rule
is tested without waiting.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from mailqueue_core import codec
from mailqueue_core.errors import SessionError
from mailqueue_core.flusher import Flusher, FlushResult
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.testing.smtpserver import FaultySMTPServer, make_tls_contexts
from mailqueue_stores.memory import MemoryStore
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import Clock, record

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)
PASSWORD = "s3cr3t-pa55word"


@pytest.fixture(scope="module")
def server():
    with FaultySMTPServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(server):
    server.clear_faults()
    server.clear()
    yield
    server.clear_faults()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store():
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def transport(server, **options) -> SMTPTransport:
    return SMTPTransport(f"smtp://{server.host}:{server.port}", timeout=2, **options)


def flush(store, server, clock, **options) -> FlushResult:
    return Flusher(store, transport(server, **options), policy=POLICY, clock=clock).flush()


def queue(store, clock, *recipients, age=0.0, n=1):
    records = [record(*recipients, created=clock.now - age) for _ in range(n)]
    store.enqueue(records)
    return records


def where(store, clock):
    """(ready, scheduled, dead) right now."""
    s = store.stats(clock.now)
    assert s.in_flight == 0, "a claim was left held"
    return s.ready, s.scheduled, s.dead


def reasons(store):
    return [d.reason for d in store.dead_letters()]


def test_delivers_a_batch_on_one_connection(store, server, clock):
    queue(store, clock, "a@x.com", n=10)
    before = server.connections
    assert flush(store, server, clock).sent == 10
    assert server.connections - before == 1
    assert len(server.messages) == 10
    assert where(store, clock) == (0, 0, 0)


def test_connection_refused_defers_young_and_buries_old(store, server, clock):
    queue(store, clock, "young@x.com")
    queue(store, clock, "old@x.com", age=86400)
    server.fault("connect", action="refuse")
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (0, 1, 1)
    assert where(store, clock) == (0, 1, 1)
    assert "cannot connect" in reasons(store)[0] and "gave up" in reasons(store)[0]


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("greeting", "421 4.3.2 Service not available"),
        ("greeting", "554 5.3.2 No service for you"),
        ("ehlo", "421 4.7.0 Try later"),
    ],
)
def test_session_refused_defers_and_never_buries(store, server, clock, stage, reply, caplog):
    queue(store, clock, "a@x.com", age=2 * 86400, n=3)
    server.fault(stage, reply)
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (0, 3, 0)
    assert where(store, clock) == (0, 3, 0)
    assert any(
        r.levelno == logging.ERROR and "burying none" in r.getMessage() for r in caplog.records
    )


def test_starttls_refused_is_a_session_error(store, server, clock):
    queue(store, clock, "a@x.com")
    server.fault("starttls", "454 4.7.0 TLS not available")
    result = flush(store, server, clock, starttls=True)
    assert (result.deferred, result.buried) == (1, 0)


def test_auth_refused_buries_nothing_and_names_the_settings(clock, caplog):
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    queue(store, clock, "a@x.com", age=3 * 86400, n=2)
    with FaultySMTPServer(auth={"user": "right"}) as s:
        result = flush(store, s, clock, username="user", password=PASSWORD)
    assert (result.sent, result.deferred, result.buried) == (0, 2, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("535" in e and "EMAIL_HOST_PASSWORD" in e for e in errors)
    # It names the options that fix it, wherever the credentials were given.
    assert any("username and password options" in e for e in errors)
    assert not any(PASSWORD in e for e in errors)


def test_login_on_a_server_that_offers_none_names_the_options(server):
    t = transport(server, username="user", password=PASSWORD)
    with pytest.raises(SessionError) as info:
        t.open()
    t.close()
    text = str(info.value)
    assert "offers no login" in text and "only after STARTTLS" in text
    assert "username and password options" in text and PASSWORD not in text


def test_auth_accepted_and_credentials_never_logged(clock, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    queue(store, clock, "a@x.com")
    with FaultySMTPServer(auth={"user": PASSWORD}, require_auth=True) as s:
        result = flush(store, s, clock, username="user", password=PASSWORD)
        assert s.messages[0].auth_user == "user"
    assert result.sent == 1
    out = capsys.readouterr()
    everything = "\n".join(r.getMessage() for r in caplog.records) + out.out + out.err
    assert PASSWORD not in everything
    assert PASSWORD not in transport(s, username="user", password=PASSWORD).describe()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("451 4.2.0 Greylisted", "deferred"),
        ("452 4.5.3 Too many recipients", "deferred"),
        ("552 5.2.2 Mailbox full", "deferred"),  # RFC 5321: temporary at RCPT
        ("550 5.1.1 No such user", "buried"),
    ],
)
def test_some_recipients_refused(store, server, clock, reply, kind):
    queue(store, clock, "ok@x.com", "refused@x.com")
    server.fault("rcpt", reply, recipients=["refused@x.com"])
    result = flush(store, server, clock)
    assert result.sent == 1
    (got,) = server.messages
    assert got.rcpt_tos == ["ok@x.com"]
    if kind == "deferred":
        assert (result.deferred, result.buried) == (1, 0)
        assert where(store, clock) == (0, 1, 0)
        server.clear_faults()
        clock.advance(61)
        assert flush(store, server, clock).sent == 1
        assert server.messages[1].rcpt_tos == ["refused@x.com"]
        # The same message (same Message-ID) went to the rest.
        assert _message_id(server.messages[1].data) == _message_id(got.data)
    else:
        assert (result.deferred, result.buried) == (0, 1)
        (letter,) = store.dead_letters()
        assert codec.decode(letter.record).recipients == ["refused@x.com"]
        assert reply in letter.reason
    assert where(store, clock)[0] == 0


def _message_id(data: bytes) -> bytes:
    return next(line for line in data.splitlines() if line.lower().startswith(b"message-id:"))


def test_all_recipients_refused_mixed(store, server, clock):
    queue(store, clock, "later@x.com", "never@x.com")
    server.fault("rcpt", "451 4.2.0 later", recipients=["later@x.com"])
    server.fault("rcpt", "550 5.1.1 never", recipients=["never@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (0, 1, 1)
    assert server.messages == []


def test_all_recipients_permanently_refused(store, server, clock):
    queue(store, clock, "a@x.com", "b@x.com")
    server.fault("rcpt", "550 5.1.1 no")
    result = flush(store, server, clock)
    assert (result.sent, result.buried) == (0, 1)


@pytest.mark.parametrize(
    ("stage", "reply", "outcome"),
    [
        ("mail", "451 4.3.0 Try later", "deferred"),
        ("mail", "553 5.1.8 Bad sender", "buried"),
        ("data", "554 5.6.0 Rejected", "buried"),
        ("data", "451 4.3.0 Later", "deferred"),
        ("dot", "554 5.7.1 Spam", "buried"),
        ("dot", "451 4.7.1 Greylisted", "deferred"),
    ],
)
def test_message_level_replies(store, server, clock, stage, reply, outcome):
    queue(store, clock, "a@x.com")
    server.fault(stage, reply)
    result = flush(store, server, clock)
    assert getattr(result, outcome) == 1
    assert result.sent == 0
    if outcome == "buried":
        assert reply in reasons(store)[0]


def test_421_mid_session_defers_the_batch(store, server, clock):
    queue(store, clock, "a@x.com", age=2 * 86400, n=3)
    server.fault("mail", "421 4.3.2 Shutting down")
    result = flush(store, server, clock)
    assert (result.deferred, result.buried) == (3, 0)


@pytest.mark.parametrize("stage", ["data", "dot"])
def test_disconnect_requeues_and_the_next_message_reconnects(store, server, clock, stage):
    queue(store, clock, "a@x.com", n=3)
    server.fault(stage, action="drop", times=1)
    before = server.connections
    result = flush(store, server, clock)
    assert (result.sent, result.deferred) == (2, 1)
    assert server.connections - before == 2
    if stage == "dot":
        assert len(server.dropped_after_dot) == 1  # the server saw it: may be a duplicate


def test_stall_past_timeout_is_transient(store, server, clock):
    queue(store, clock, "a@x.com")
    server.fault("dot", action="stall", seconds=3, times=1)
    result = Flusher(
        store,
        SMTPTransport(f"smtp://{server.host}:{server.port}", timeout=0.5),
        policy=POLICY,
        clock=clock,
    ).flush()
    assert result.deferred == 1
    assert where(store, clock) == (0, 1, 0)


def test_max_age_buries_only_after_a_failed_last_try(store, server, clock):
    queue(store, clock, "old@x.com", age=86400)
    queue(store, clock, "young@x.com", age=86400 - 61)
    server.fault("rcpt", "451 4.2.0 later")
    result = flush(store, server, clock)
    assert (result.deferred, result.buried) == (1, 1)
    assert "gave up" in reasons(store)[0]
    # The young one's retry is scheduled no later than its 24 hours.
    clock.advance(61)
    result = flush(store, server, clock)
    assert result.buried == 1


def test_starttls_verifies_the_certificate(tmp_path, clock, caplog):
    server_ctx, _ = make_tls_contexts(ca_path=tmp_path / "ca.pem")
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    queue(store, clock, "a@x.com", n=2)
    with FaultySMTPServer(starttls_context=server_ctx) as s:
        # Not trusted: a session error, nothing buried.
        result = flush(store, s, clock, starttls=True)
        assert (result.deferred, result.buried) == (2, 0)
        (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "TLS failed: the server's certificate did not verify" in error
        assert "CERTIFICATE_VERIFY_FAILED" in error
        assert "ssl_cafile option" in error and "verify=false" in error
        clock.advance(3600)
        result = flush(store, s, clock, starttls=True, ssl_cafile=str(tmp_path / "ca.pem"))
        assert result.sent == 2
        assert all(m.tls for m in s.messages)


def test_verify_false_is_explicit(tmp_path, clock):
    server_ctx, _ = make_tls_contexts()
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    queue(store, clock, "a@x.com")
    with FaultySMTPServer(starttls_context=server_ctx) as s:
        assert flush(store, s, clock, starttls=True, verify=False).sent == 1


def test_implicit_tls(tmp_path, clock):
    server_ctx, _ = make_tls_contexts(ca_path=tmp_path / "ca.pem")
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    queue(store, clock, "a@x.com")
    with FaultySMTPServer(implicit_tls_context=server_ctx) as s:
        result = flush(store, s, clock, ssl=True, ssl_cafile=str(tmp_path / "ca.pem"))
        assert result.sent == 1 and s.messages[0].tls


def test_open_errors_are_classified(server):
    t = transport(server, starttls=True)  # this server offers no STARTTLS
    with pytest.raises(SessionError, match="STARTTLS extension not supported"):
        t.open()
    t.close()
    server_ctx, _ = make_tls_contexts()
    with FaultySMTPServer(starttls_context=server_ctx) as s:
        s.fault("starttls", "454 4.7.0 no TLS now")
        with pytest.raises(SessionError, match="454"):
            transport(s, starttls=True).open()
