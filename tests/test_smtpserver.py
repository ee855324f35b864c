"""FaultySMTPServer: each fault does what it says, driven by plain smtplib."""

from __future__ import annotations

import ast
import base64
import gc
import importlib.util
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailqueue_core.testing.smtpserver import FaultySMTPServer, Received, make_tls_contexts

MESSAGE = b"Subject: hello\r\n\r\nbody line\r\n"
TRICKY = (
    b"Subject: dots and bytes\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"  # a line of one dot inside the body, not the end
    b"caf\xc3\xa9 and a raw \xff byte\r\n"
    b"last line\r\n"
)
SHORT = 0.5  # client timeout when the server stalls for longer
STALL = 1.5


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return make_tls_contexts()


@pytest.fixture
def server() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer() as s:
        yield s


def client(server: FaultySMTPServer, timeout: float = 5.0) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def send(server: FaultySMTPServer, to: list[str] | None = None, msg: bytes = MESSAGE) -> dict:
    with client(server) as c:
        return c.sendmail("from@example.com", to or ["to@example.com"], msg)


def timed_out(err: pytest.ExceptionInfo[smtplib.SMTPServerDisconnected]) -> bool:
    """smtplib reports a reply that never came as a disconnection caused by a timeout."""
    return isinstance(err.value.__context__, TimeoutError)


def raw_reply(sock_file) -> bytes:
    """One whole (possibly multi-line) reply read off a raw socket."""
    lines = []
    while True:
        line = sock_file.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


# -- delivery ---------------------------------------------------------------------------


def test_delivery_is_recorded_byte_exact(server):
    before = time.time()
    assert send(server, ["a@example.com", "b@example.com"], TRICKY) == {}
    [got] = server.messages
    assert got == Received(
        mail_from="from@example.com",
        rcpt_tos=["a@example.com", "b@example.com"],
        data=TRICKY,
        arrived=got.arrived,
        auth_user=None,
        tls=False,
        connection=0,
    )
    assert before <= got.arrived <= time.time()


def test_messages_is_a_copy_and_clear_forgets(server):
    send(server)
    server.messages.clear()
    assert len(server.messages) == 1
    server.clear()
    assert server.messages == []
    assert server.dropped_after_dot == []


def test_connections_are_counted_and_named_on_messages(server):
    with client(server) as c:
        c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
        c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
    assert server.connections == 1
    send(server)
    assert server.connections == 2
    assert [m.connection for m in server.messages] == [0, 0, 1]


def test_wait_for_blocks_until_messages_arrive(server):
    sender = threading.Thread(target=lambda: [send(server) for _ in range(2)])
    sender.start()
    try:
        assert len(server.wait_for(2, timeout=10)) == 2
    finally:
        sender.join()


def test_wait_for_says_how_many_arrived(server):
    send(server)
    with pytest.raises(TimeoutError, match="1 of 2 messages"):
        server.wait_for(2, timeout=0.05)


def test_no_auth_is_offered_without_credentials(server):
    with client(server) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        assert c.docmd("AUTH", "PLAIN AGZvbwBiYXI=")[0] == 504


def test_bodies_are_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    send(server, msg=b"Subject: s\r\n\r\nSECRET-BODY-MARKER\r\n")
    assert server.messages
    assert "SECRET-BODY-MARKER" not in caplog.text


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_credentials_are_never_logged(caplog, mechanism):
    caplog.set_level(logging.DEBUG)
    with FaultySMTPServer(auth={"alice": "s3cret"}) as s, client(s) as c:
        c.ehlo()
        c.user, c.password = "alice", "s3cret"
        c.auth(mechanism, getattr(c, f"auth_{mechanism.lower()}"))
    secrets = [base64.b64encode(b"\0alice\0s3cret"), base64.b64encode(b"s3cret"), b"s3cret"]
    assert not [x for x in secrets if x.decode() in caplog.text]


# -- connect and greeting ---------------------------------------------------------------


def test_refuse_then_resume_on_the_same_port(server):
    port = server.port
    server.fault("connect", action="refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=2).close()
    assert server.connections == 0
    server.clear_faults()
    assert server.port == port
    assert send(server) == {}
    assert server.connections == 1


def test_refusal_spares_open_connections(server):
    with client(server) as c:
        server.fault("connect", action="refuse")
        assert c.sendmail("f@example.com", ["t@example.com"], MESSAGE) == {}
    server.clear_faults()


def test_refusal_set_before_start_holds_from_the_start():
    s = FaultySMTPServer()
    s.clear_faults()  # harmless while stopped
    s.fault("connect", action="refuse")
    with s:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((s.host, s.port), timeout=2).close()
        s.clear_faults()
        assert send(s) == {}


def test_greeting_421(server):
    server.fault("greeting", "421 4.3.2 Service not available")
    with pytest.raises(smtplib.SMTPConnectError) as err:
        client(server)
    assert err.value.smtp_code == 421


def test_greeting_reply_closes_the_connection(server):
    server.fault("greeting", "554 5.7.1 Go away")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        f = sock.makefile("rb")
        assert f.readline() == b"554 5.7.1 Go away\r\n"
        assert f.readline() == b""
        f.close()


def test_greeting_drop(server):
    server.fault("greeting", action="drop")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client(server)


def test_greeting_stall(server):
    server.fault("greeting", action="stall", seconds=STALL)
    with pytest.raises(smtplib.SMTPServerDisconnected) as err:
        client(server, timeout=SHORT)
    assert timed_out(err)


def test_greeting_stall_then_banner_keeps_what_the_client_said_early(server):
    server.fault("greeting", action="stall", seconds=STALL, times=1)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        f = sock.makefile("rb")
        sock.sendall(b"NOOP\r\n")  # before the banner: held, then read by the session
        assert raw_reply(f).startswith(b"220 ")
        assert raw_reply(f).startswith(b"250 ")
        f.close()
    assert send(server) == {}


def test_greeting_stall_then_reply(server):
    server.fault("greeting", "421 4.3.2 Busy", action="stall", seconds=0.05)
    with pytest.raises(smtplib.SMTPConnectError) as err:
        client(server)
    assert err.value.smtp_code == 421


def test_client_hanging_up_during_a_greeting_stall(server):
    server.fault("greeting", action="stall", seconds=STALL, times=1)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the server closes rather than greet nobody
    assert send(server) == {}


@pytest.mark.parametrize("reply", ["554 5.7.1 Go away", None])
def test_greeting_faults_over_implicit_tls(tls, reply):
    with FaultySMTPServer(implicit_tls_context=tls[0]) as s:
        if reply:
            s.fault("greeting", reply)
        else:
            s.fault("greeting", action="drop")
        with pytest.raises(smtplib.SMTPException) as err:  # after the handshake succeeded
            smtplib.SMTP_SSL(s.host, s.port, context=tls[1], timeout=5)
        if reply:
            assert isinstance(err.value, smtplib.SMTPConnectError)
            assert err.value.smtp_code == 554
        else:
            assert isinstance(err.value, smtplib.SMTPServerDisconnected)


# -- envelope ---------------------------------------------------------------------------


def test_per_recipient_faults_leave_others_accepted(server):
    server.fault("rcpt", "550 5.1.1 No such user", recipients=["Gone@example.com"])
    server.fault("rcpt", "451 4.7.1 Greylisted", recipients=["later@example.com"])
    refused = send(server, ["gone@example.com", "ok@example.com", "later@example.com"])
    assert refused == {
        "gone@example.com": (550, b"5.1.1 No such user"),
        "later@example.com": (451, b"4.7.1 Greylisted"),
    }
    [got] = server.messages
    assert got.rcpt_tos == ["ok@example.com"]


def test_all_recipients_refused_records_nothing(server):
    server.fault("rcpt", "452 4.5.3 Too many recipients")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server, ["a@example.com", "b@example.com"])
    assert server.messages == []


def test_a_recipient_limit_counts_each_transaction_afresh(server):
    limit = server.fault("rcpt", "452 4.5.3 Too many recipients", max_recipients=2)
    with client(server) as c:
        refused = c.sendmail(
            "f@example.com", ["a@x.com", "b@x.com", "c@x.com", "d@x.com"], MESSAGE
        )
        assert refused == {
            "c@x.com": (452, b"4.5.3 Too many recipients"),
            "d@x.com": (452, b"4.5.3 Too many recipients"),
        }
        # A new transaction on the same connection starts counting at zero again.
        assert c.sendmail("f@example.com", ["c@x.com", "d@x.com"], MESSAGE) == {}
        c.ehlo()
        c.mail("f@example.com")
        assert c.rcpt("e@x.com")[0] == 250
        c.rset()  # so does a reset transaction
        c.mail("f@example.com")
        assert [c.rcpt(r)[0] for r in ("e@x.com", "f@x.com", "g@x.com")] == [250, 250, 452]
    assert [m.rcpt_tos for m in server.messages] == [
        ["a@x.com", "b@x.com"],
        ["c@x.com", "d@x.com"],
    ]
    assert limit.fired == 3


def test_a_recipient_limit_can_be_narrowed_to_some_recipients(server):
    server.fault("rcpt", "452 4.2.2 Mailbox full", recipients=["full@x.com"], max_recipients=1)
    refused = send(server, ["full@x.com", "a@x.com", "full@x.com"])
    assert refused == {"full@x.com": (452, b"4.2.2 Mailbox full")}
    assert server.messages[0].rcpt_tos == ["full@x.com", "a@x.com"]


def test_a_2xx_fault_reply_still_accepts(server):
    server.fault("mail", "250 2.1.0 Sender fine")
    server.fault("rcpt", "250 2.1.5 Recipient fine")
    server.fault("dot", "250 2.0.0 Queued as X1")
    with client(server) as c:
        c.ehlo()
        assert c.mail("f@example.com") == (250, b"2.1.0 Sender fine")
        assert c.rcpt("t@example.com") == (250, b"2.1.5 Recipient fine")
        assert c.data(MESSAGE) == (250, b"2.0.0 Queued as X1")
    assert server.messages[0].rcpt_tos == ["t@example.com"]


def test_mail_refused(server):
    server.fault("mail", "451 4.3.0 Try again later")
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(server)
    assert err.value.smtp_code == 451


def test_a_421_reply_closes_the_connection(server):
    server.fault("mail", "421 4.3.2 Shutting down")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        f = sock.makefile("rb")
        raw_reply(f)
        sock.sendall(b"EHLO me\r\n")
        raw_reply(f)
        sock.sendall(b"MAIL FROM:<f@example.com>\r\n")
        assert f.readline() == b"421 4.3.2 Shutting down\r\n"
        assert f.readline() == b""
        f.close()


def test_ehlo_refused_falls_back_to_helo(server):
    server.fault("ehlo", "502 5.5.2 Command not recognized")
    assert send(server) == {}
    assert len(server.messages) == 1


def test_ehlo_reply_without_extensions(server, tls):
    with FaultySMTPServer(starttls_context=tls[0]) as s:
        s.fault("ehlo", "250 localhost")
        with client(s) as c:
            c.ehlo()
            assert not c.has_extn("starttls")
            assert c.sendmail("f@example.com", ["t@example.com"], MESSAGE) == {}


@pytest.mark.parametrize("stage", ["ehlo", "mail", "rcpt"])
def test_drop_at_a_command(server, stage):
    server.fault(stage, action="drop")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server)
    assert server.messages == []


def test_stall_past_the_client_timeout(server):
    server.fault("rcpt", action="stall", seconds=STALL)
    with client(server, timeout=SHORT) as c, pytest.raises(smtplib.SMTPServerDisconnected) as err:
        c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
    assert timed_out(err)
    assert server.messages == []


def test_stall_then_reply(server):
    fault = server.fault("mail", "451 4.3.0 Slow and sorry", action="stall", seconds=0.05)
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(server)
    assert err.value.smtp_code == 451
    assert fault.fired == 1


def test_short_stall_then_normal_service(server):
    server.fault("ehlo", action="stall", seconds=0.05)
    assert send(server) == {}


# -- DATA and the final dot -------------------------------------------------------------


def test_data_refused(server):
    server.fault("data", "554 5.6.0 Rejected")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 554
    assert server.messages == []


def test_out_of_order_commands_meet_no_fault(server, tls):
    server.fault("data", "554 5.6.0 Rejected")
    with client(server) as c:
        c.ehlo()
        assert c.docmd("DATA")[0] == 503  # no recipients yet: aiosmtpd's own answer
    with FaultySMTPServer(starttls_context=tls[0]) as s, client(s) as c:
        s.fault("starttls", "454 4.7.0 TLS not available")
        c.ehlo()
        assert c.docmd("STARTTLS", "now")[0] == 501


def test_data_stall_then_normal_service(server):
    server.fault("data", action="stall", seconds=0.05)
    assert send(server) == {}


def test_drop_mid_data(server):
    server.fault("data", action="drop")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server, msg=MESSAGE * 1000)
    assert server.messages == []
    assert server.dropped_after_dot == []


def test_drop_after_dot(server):
    server.fault("dot", action="drop")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server, msg=TRICKY)
    assert server.messages == []
    [seen] = server.dropped_after_dot
    assert seen.data == TRICKY


def test_dot_reply_is_not_recorded(server):
    server.fault("dot", "552 5.2.2 Mailbox full")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(server)
    assert err.value.smtp_code == 552
    assert server.messages == []


def test_stall_after_dot_still_delivers(server):
    # The client gives up waiting for the 250, yet the server has the message.
    server.fault("dot", action="stall", seconds=STALL)
    with client(server, timeout=SHORT) as c, pytest.raises(smtplib.SMTPServerDisconnected) as err:
        c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
    assert timed_out(err)
    assert len(server.messages) == 1


def test_times_fires_then_clears_itself(server):
    fault = server.fault("dot", "451 4.7.1 Greylisted", times=1)
    with pytest.raises(smtplib.SMTPDataError):
        send(server)
    assert send(server) == {}
    assert fault.fired == 1
    assert len(server.messages) == 1


def test_newest_fault_wins_and_clear_faults_ends_all(server):
    server.fault("mail", "550 5.7.1 Old rule")
    server.fault("mail", "451 4.3.0 New rule")
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(server)
    assert err.value.smtp_code == 451
    server.clear_faults()
    assert send(server) == {}


# -- AUTH -------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_good(mechanism):
    with FaultySMTPServer(auth={"alice": "s3cret"}) as s, client(s) as c:
        c.ehlo()
        c.user, c.password = "alice", "s3cret"
        method = {"PLAIN": c.auth_plain, "LOGIN": c.auth_login}[mechanism]
        assert c.auth(mechanism, method)[0] == 235
        c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
        assert s.messages[0].auth_user == "alice"


def test_auth_bad():
    with FaultySMTPServer(auth={"alice": "s3cret"}) as s, client(s) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.login("alice", "wrong")
        assert err.value.smtp_code == 535
        assert err.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("mallory", "s3cret")


def test_auth_fault_rejects_good_credentials():
    with FaultySMTPServer(auth={"alice": "s3cret"}) as s, client(s) as c:
        s.fault("auth", "535 5.7.8 Authentication credentials invalid")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice", "s3cret")


def test_auth_optional_unless_required():
    with FaultySMTPServer(auth={"alice": "s3cret"}) as s:
        assert send(s) == {}
        assert s.messages[0].auth_user is None


def test_require_auth():
    with FaultySMTPServer(auth={"alice": "s3cret"}, require_auth=True) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            send(s)
        assert err.value.smtp_code == 530
        assert err.value.smtp_error == b"5.7.0 Authentication required"
        with client(s) as c:
            c.login("alice", "s3cret")
            assert c.sendmail("f@example.com", ["t@example.com"], MESSAGE) == {}


def test_auth_fault_meets_only_an_auth_that_would_start(tls):
    with FaultySMTPServer(auth={"a": "b"}, starttls_context=tls[0]) as s, client(s) as c:
        fault = s.fault("auth", "454 4.7.0 Temporary authentication failure")
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 503  # no EHLO yet
        c.ehlo()
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 538  # not before STARTTLS
        c.starttls(context=tls[1])
        c.ehlo()
        assert c.docmd("AUTH", "CRAM-MD5")[0] == 504  # not offered
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 454
        assert fault.fired == 1
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 454
        s.clear_faults()
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 235
        assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 503  # already authenticated


@pytest.mark.parametrize("stage", ["auth", "starttls"])
def test_drop_at_tls_and_auth(stage, tls):
    with FaultySMTPServer(auth={"a": "b"}, starttls_context=tls[0]) as s, client(s) as c:
        if stage == "auth":
            c.starttls(context=tls[1])
        s.fault(stage, action="drop")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            if stage == "starttls":
                c.starttls(context=tls[1])
            else:
                c.login("a", "b")


# -- TLS --------------------------------------------------------------------------------


def test_starttls_verified_against_the_ca(tls):
    server_ctx, client_ctx = tls
    with FaultySMTPServer(auth={"alice": "s3cret"}, starttls_context=server_ctx) as s:
        with client(s) as c:
            c.ehlo()
            assert not c.has_extn("auth")  # credentials only after STARTTLS
            assert c.starttls(context=client_ctx)[0] == 220
            c.login("alice", "s3cret")
            c.sendmail("f@example.com", ["t@example.com"], TRICKY)
        [got] = s.messages
        assert (got.tls, got.auth_user, got.data) == (True, "alice", TRICKY)


def test_starttls_untrusted_certificate_fails_then_server_serves_on(tls):
    with FaultySMTPServer(starttls_context=tls[0]) as s:
        with client(s) as c, pytest.raises(ssl.SSLCertVerificationError):
            c.starttls(context=ssl.create_default_context())
        assert send(s) == {}


def test_starttls_refused_with_454(tls):
    with FaultySMTPServer(starttls_context=tls[0]) as s, client(s) as c:
        s.fault("starttls", "454 4.7.0 TLS not available")
        with pytest.raises(smtplib.SMTPResponseException) as err:
            c.starttls(context=tls[1])
        assert (err.value.smtp_code, err.value.smtp_error) == (454, b"4.7.0 TLS not available")
        assert c.sendmail("f@example.com", ["t@example.com"], MESSAGE) == {}
        assert s.messages[0].tls is False


def test_starttls_stall_then_handshake(tls):
    with FaultySMTPServer(starttls_context=tls[0]) as s, client(s) as c:
        s.fault("starttls", action="stall", seconds=0.05)
        assert c.starttls(context=tls[1])[0] == 220


def test_implicit_tls(tls):
    server_ctx, client_ctx = tls
    with FaultySMTPServer(auth={"alice": "s3cret"}, implicit_tls_context=server_ctx) as s:
        with smtplib.SMTP_SSL(s.host, s.port, context=client_ctx, timeout=5) as c:
            c.login("alice", "s3cret")
            c.sendmail("f@example.com", ["t@example.com"], MESSAGE)
        [got] = s.messages
        assert (got.tls, got.auth_user) == (True, "alice")


def test_implicit_tls_handshake_failure_is_survived(tls):
    with FaultySMTPServer(implicit_tls_context=tls[0]) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(s.host, s.port, context=ssl.create_default_context(), timeout=5)
        with smtplib.SMTP_SSL(s.host, s.port, context=tls[1], timeout=5) as c:
            assert c.noop()[0] == 250


def test_ca_file_for_other_clients(tmp_path):
    ca_file = tmp_path / "ca.pem"
    server_ctx, _ = make_tls_contexts(ca_path=ca_file)
    with FaultySMTPServer(implicit_tls_context=server_ctx) as s:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        with smtplib.SMTP_SSL(s.host, s.port, context=ctx, timeout=5) as c:
            assert c.noop()[0] == 250


# -- life cycle -------------------------------------------------------------------------


def server_threads() -> int:
    return sum(t.name == "FaultySMTPServer" for t in threading.enumerate())


def test_stops_cleanly_with_stalled_and_half_open_connections(tls):
    threads = server_threads()
    plain = FaultySMTPServer()
    secure = FaultySMTPServer(implicit_tls_context=tls[0])
    plain.start()
    secure.start()
    plain.fault("dot", action="stall", seconds=30)
    stalled = client(plain)
    stalled.ehlo()
    stalled.mail("f@example.com")
    stalled.rcpt("t@example.com")
    stalled.send(b"DATA\r\n" + MESSAGE + b".\r\n")  # no reply will come
    half_command = socket.create_connection((plain.host, plain.port))
    half_command.sendall(b"MAIL FROM:<f@exam")
    no_handshake = socket.create_connection((secure.host, secure.port))
    # Once a later connection is served, the server has accepted the half-open one.
    with smtplib.SMTP_SSL(secure.host, secure.port, context=tls[1], timeout=5) as c:
        c.noop()
    assert secure.connections == 2
    plain.wait_for(1)
    started = time.monotonic()
    plain.stop()
    secure.stop()
    assert time.monotonic() - started < 3
    assert server_threads() == threads
    for sock in (stalled, half_command, no_handshake):
        sock.close()
    gc.collect()  # an unclosed transport or socket would warn here, and warnings are errors


def test_stops_cleanly_with_a_connection_held_before_its_greeting():
    threads = server_threads()
    s = FaultySMTPServer()
    s.start()
    s.fault("greeting", action="stall", seconds=30, times=1)
    held = socket.create_connection((s.host, s.port))
    with client(s) as c:  # greeted, so the held one before it met the stall
        c.noop()
    started = time.monotonic()
    s.stop()
    assert time.monotonic() - started < 3
    assert held.recv(100) == b""
    assert server_threads() == threads
    held.close()
    gc.collect()


def test_restart_keeps_the_port_and_the_record():
    s = FaultySMTPServer()
    s.start()
    port = s.port
    send(s)
    s.stop()
    s.stop()  # a second stop is harmless
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, port), timeout=2).close()
    with s:
        assert s.port == port
        send(s)
        assert [m.connection for m in s.messages] == [0, 1]
    with pytest.raises(RuntimeError, match="already running"), FaultySMTPServer() as again:
        again.start()


def test_start_fails_loudly_when_the_port_is_taken():
    with FaultySMTPServer() as first:
        second = FaultySMTPServer()
        second.port = first.port
        with pytest.raises(OSError):
            second.start()
        assert second.port == first.port


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("helo", "250 x"), {}, "unknown stage"),
        (("mail", "250 x"), {"action": "explode"}, "unknown action"),
        (("connect",), {}, "refuse"),
        (("mail",), {"action": "refuse"}, "refuse"),
        (("mail",), {}, "needs a reply"),
        (("mail", "250 x"), {"action": "drop"}, "sends no reply"),
        (("mail", "hello"), {}, "not an SMTP reply"),
        (("mail",), {"action": "stall"}, "seconds is required"),
        (("mail", "250 x"), {"seconds": 1}, "seconds is required"),
        (("mail",), {"action": "stall", "seconds": -1}, "negative"),
        (("mail", "250 x"), {"recipients": ["a@b"]}, "only applies"),
        (("mail", "452 x"), {"max_recipients": 5}, "max_recipients applies"),
        (("rcpt", "452 x"), {"max_recipients": 0}, "at least 1"),
        (("mail", "250 x"), {"times": 0}, "times"),
        (("connect",), {"action": "refuse", "times": 1}, "times"),
    ],
)
def test_bad_faults_are_refused(args, kwargs, message):
    s = FaultySMTPServer()
    with pytest.raises(ValueError, match=message):
        s.fault(*args, **kwargs)


def test_bad_settings_are_refused(tls):
    with pytest.raises(ValueError, match="require_auth"):
        FaultySMTPServer(require_auth=True)
    with pytest.raises(ValueError, match="not both"):
        FaultySMTPServer(starttls_context=tls[0], implicit_tls_context=tls[0])


def test_listens_on_a_chosen_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with FaultySMTPServer(port=port) as server:
        assert server.port == port
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        assert len(server.messages) == 1


# -- aiosmtpd through its public surface only ---------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def aiosmtpd_private_names() -> set[str]:
    """Every ``_name`` aiosmtpd's own code defines or touches (its tests and docs aside)."""
    spec = importlib.util.find_spec("aiosmtpd")
    assert spec is not None and spec.origin is not None, "aiosmtpd is a test dependency"
    names = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        if {"tests", "testing", "docs", "qa"} & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name):
                names.add(node.id)
    return {n for n in names if private(n)}


def imports_aiosmtpd(tree: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "aiosmtpd")
        or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "aiosmtpd" for a in n.names))
        for n in ast.walk(tree)
    )


def private_uses(source: str, theirs: set[str]) -> list[str]:
    """Where ``source`` touches aiosmtpd's private names, one line per use.

    Caught: importing a ``_`` name from aiosmtpd; in a class derived from an aiosmtpd class,
    defining or touching any ``self._x`` (it would share aiosmtpd's namespace); anywhere,
    ``obj._x`` or ``getattr(obj, "_x")`` on another object where ``_x`` is aiosmtpd's.
    """
    tree = ast.parse(source)
    found: list[str] = []
    from_aiosmtpd: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiosmtpd"):
            for alias in node.names:
                from_aiosmtpd.add(alias.asname or alias.name)
                if private(alias.name):
                    found.append(f"line {node.lineno}: imports {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id in from_aiosmtpd for b in node.bases
        ):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) and private(
                    inner.name
                ):
                    found.append(f"line {inner.lineno}: overrides {inner.name}")
                elif (
                    isinstance(inner, ast.Attribute)
                    and isinstance(inner.value, ast.Name)
                    and inner.value.id == "self"
                    and private(inner.attr)
                ):
                    found.append(f"line {inner.lineno}: uses self.{inner.attr}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in theirs
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            found.append(f"line {node.lineno}: reaches into .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in theirs
        ):
            found.append(f"line {node.lineno}: {node.func.id} {node.args[1].value}")
    return sorted(set(found))


def project_files_using_aiosmtpd() -> list[Path]:
    found = []
    for top in ("mailqueue_core", "mailqueue_stores", "mailqueue_transports", "bench", "tests"):
        for path in sorted((REPO / top).rglob("*.py")):
            if imports_aiosmtpd(ast.parse(path.read_text(encoding="utf-8"))):
                found.append(path)
    return found


def test_the_private_name_check_catches_the_old_ways():
    old_ways = (
        "from aiosmtpd.smtp import SMTP, _Missing\n"
        "class Session(SMTP):\n"
        "    async def _handle_client(self):\n"
        "        await self._reader.read(1)\n"
        "        await super()._handle_client()\n"
        "def peek(server):\n"
        "    return server._handle_hooks, getattr(server, '_tls_protocol')\n"
    )
    assert private_uses(old_ways, aiosmtpd_private_names()) == [
        "line 1: imports _Missing",
        "line 3: overrides _handle_client",
        "line 4: uses self._reader",
        "line 5: reaches into ._handle_client",
        "line 7: getattr _tls_protocol",
        "line 7: reaches into ._handle_hooks",
    ]


def test_nothing_here_touches_aiosmtpd_private_names():
    files = project_files_using_aiosmtpd()
    kit = REPO / "mailqueue_core" / "testing"
    assert {kit / "smtpserver.py", kit / "smtpsession.py"} <= set(files)
    theirs = aiosmtpd_private_names()
    found = {
        str(path.relative_to(REPO)): uses
        for path in files
        if (uses := private_uses(path.read_text(encoding="utf-8"), theirs))
    }
    assert found == {}
