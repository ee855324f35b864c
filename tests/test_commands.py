"""manage.py mailqueue ... and the standalone mailqueue command: output and exit status."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import time
import uuid

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test import override_settings

from mailqueue_core import cli
from mailqueue_core.backend import EmailBackend
from mailqueue_core.commands import parse_duration
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.store import Stats
from mailqueue_stores.memory import MemoryStore
from tests.test_configuration import install_stores

LOCMEM = {
    "NAME": "django",
    "OPTIONS": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
}


@pytest.fixture
def conf():
    c = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": LOCMEM}
    with override_settings(MAILQUEUE=c):
        mail.outbox = []
        yield c


def send(n=1, to="r@example.com"):
    return EmailBackend().send_messages(
        [EmailMessage(f"Subject {i}", "Body", "site@example.com", [to]) for i in range(n)]
    )


def manage(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("mailqueue", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_flush_delivers_and_prints_summary(conf):
    send(3)
    code, out, err = manage("flush")
    assert code == 0
    assert out.startswith("sent 3, deferred 0, buried 0 in ")
    assert err == ""
    assert [m.subject for m in mail.outbox] == ["Subject 0", "Subject 1", "Subject 2"]


def test_flush_quiet_and_verbosity_after_subcommand(conf):
    send(1)
    code, out, _ = manage("flush", "--quiet", "-v", "2")
    assert (code, out) == (0, "")
    assert len(mail.outbox) == 1


def test_flush_limit(conf):
    send(5)
    manage("flush", "--limit", "2")
    assert len(mail.outbox) == 2


def test_status_table_json_and_check(conf):
    send(2)
    code, out, _ = manage("status")
    assert code == 0
    assert "ready        2" in out
    code, out, _ = manage("status", "--json")
    data = json.loads(out)
    assert data["ready"] == 2 and data["dead"] == 0
    assert manage("status", "--check")[0] == 0
    code, _, err = manage("status", "--check", "--max-age", "0")
    assert code == 1 and "is the flusher running" in err


def _bury_one(conf):
    store = get_store(conf["STORE"], "default")
    (claim,) = store.fetch_due(time.time(), 1, 30)
    store.bury(claim, "550 5.1.1 no such user", time.time())
    return claim.id


def test_dead_retry_purge(conf):
    send(1, to="gone@example.com")
    mid = _bury_one(conf)
    code, out, _ = manage("dead")
    assert code == 0
    assert mid in out and "gone@example.com" in out and "550 5.1.1" in out and "Subject 0" in out
    rows = json.loads(manage("dead", "--json")[1])
    assert rows[0]["id"] == mid and rows[0]["recipients"] == ["gone@example.com"]
    assert manage("status", "--check")[0] == 1
    assert manage("retry", mid)[1] == "revived 1 message(s)\n"
    assert manage("flush")[0] == 0
    assert len(mail.outbox) == 1
    send(1)
    _bury_one(conf)
    assert manage("purge", "--older-than", "1h")[1] == "purged 0 dead letter(s)\n"
    assert manage("purge", "--older-than", "0")[1] == "purged 1 dead letter(s)\n"
    assert manage("dead")[1] == "no dead letters\n"


def test_retry_needs_ids_or_all(conf):
    assert manage("retry")[0] == 1
    assert manage("retry", "--all")[1] == "revived 0 message(s)\n"


def test_store_unreachable_exit_codes(unused_tcp_port):
    with override_settings(MAILQUEUE={"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0"}):
        code, _, err = manage("status")
        assert code == 2 and "cannot be reached" in err
        assert manage("flush")[0] == 1


def test_bad_configuration_exit_1():
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        code, _, err = manage("status")
    assert code == 1 and "BOGUS" in err


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90m", 5400), ("12h", 43200), ("7d", 604800)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")


def test_standalone_cli_with_urls(capsys):
    store = f"memory://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": store}):
        send(2)
    transport = "django:django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    assert cli.main(["status", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ready"] == 2
    assert cli.main(["flush", "--store", store, "--transport", transport]) == 0
    assert "sent 2" in capsys.readouterr().out
    assert len(mail.outbox) == 2


def test_standalone_cli_settings_module(capsys):
    assert cli.main(["status", "--settings", "tests.settings"]) == 0
    assert "ready" in capsys.readouterr().out


def test_standalone_cli_needs_a_store(capsys):
    assert cli.main(["status"]) == 1
    assert "--store" in capsys.readouterr().err


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_and_quiet_under_cron(conf, monkeypatch):
    from mailqueue_core import commands
    from mailqueue_core.commands.output import Progress

    send(3)
    err = FakeTTY()
    out = io.StringIO()
    options = argparse.Namespace(
        subcommand="flush",
        limit=None,
        time_limit=None,
        loop=False,
        interval=5.0,
        workers=1,
        quiet=False,
    )
    monkeypatch.setattr(Progress, "every", 0)  # show every step in this test
    code = commands.run(options, lambda: get_config(), stdout=out, stderr=err)
    assert code == 0
    assert "\r1 sent, 0 deferred, 0 buried" in err.getvalue()
    assert out.getvalue().startswith("sent 3,")


def test_signals_from_the_flusher(conf):
    from mailqueue_core.signals import message_sent

    heard = []

    def receiver(sender, message_id, recipients, transport, provider_id, **kwargs):
        heard.append((message_id, recipients, transport))

    message_sent.connect(receiver)
    try:
        send(1)
        manage("flush")
    finally:
        message_sent.disconnect(receiver)
    ((_, recipients, transport),) = heard
    assert recipients == ["r@example.com"] and "locmem" in transport


def test_a_failing_receiver_does_not_stop_deliveries(conf, caplog):
    from mailqueue_core.signals import message_sent

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    message_sent.connect(broken)
    try:
        send(2)
        code, out, _ = manage("flush")
    finally:
        message_sent.disconnect(broken)
    assert code == 0 and out.startswith("sent 2,")
    assert any("receiver bug" in r.getMessage() for r in caplog.records)


def _strand_one(conf):
    """A message held by a claim whose lease ran out long ago: a flusher died with it."""
    from tests.helpers import record

    store = get_store(conf["STORE"], "default")
    now = time.time()
    store.enqueue([record(created=now - 2000)])
    (claim,) = store.fetch_due(now - 1000, 1, 10)
    return claim.id


def test_status_counts_stuck_messages_and_check_fails_on_them(conf):
    _strand_one(conf)
    code, out, _ = manage("status")
    assert code == 0
    assert "in flight    0\nstuck        1\n" in out
    assert json.loads(manage("status", "--json")[1])["stuck"] == 1
    code, _, err = manage("status", "--check")
    assert code == 1
    assert "1 message(s) stuck: held past their lease" in err
    assert manage("status", "--check", "--max-stuck", "1")[0] == 0
    assert manage("flush")[0] == 0  # a running flusher takes it back
    assert json.loads(manage("status", "--json")[1])["stuck"] == 0
    assert len(mail.outbox) == 1


def test_status_check_thresholds_refuse_negative_counts(conf):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--max-stuck: must be 0 or more"):
        manage("status", "--check", "--max-stuck", "-1")


class HungUpTTY(FakeTTY):
    """A terminal that went away (SIGHUP): writing to it fails."""

    def write(self, text):
        raise OSError(5, "Input/output error")


def test_a_terminal_that_hangs_up_does_not_stop_the_flush(conf, monkeypatch):
    from mailqueue_core import commands
    from mailqueue_core.commands.output import Progress

    send(3)
    monkeypatch.setattr(Progress, "every", 0)
    options = argparse.Namespace(
        subcommand="flush",
        limit=None,
        time_limit=None,
        loop=False,
        interval=5.0,
        workers=1,
        quiet=True,
    )
    assert commands.run(options, get_config, stdout=io.StringIO(), stderr=HungUpTTY()) == 0
    assert len(mail.outbox) == 3


# -- first contact: what a newcomer's mistakes give --------------------------------------


def test_flush_says_an_unreachable_store_cannot_be_reached(unused_tcp_port):
    down = {"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0", "TRANSPORT": LOCMEM}
    with override_settings(MAILQUEUE=down):
        for workers in ("1", "2"):
            code, _, err = manage("flush", "--workers", workers)
            assert code == 1
            assert err.startswith("mailqueue: the store cannot be reached: redis store")
            assert "failed during flush" not in err  # kept for a store lost mid-run


@pytest.mark.parametrize(
    "subcommand",
    [
        ["status"],
        ["status", "--check"],
        ["dead"],
        ["purge", "--older-than", "1d"],
        ["retry", "--all"],
    ],
)
def test_commands_that_read_never_create_a_queue(tmp_path, subcommand):
    typo = tmp_path / "queu.db"
    with override_settings(MAILQUEUE={"STORE": f"sqlite:///{typo}"}):
        code, out, err = manage(*subcommand)
    assert code == (2 if subcommand[0] == "status" else 1)
    assert out == ""
    assert err.startswith(
        f"mailqueue: the store cannot be reached: sqlite store: there is no queue at {typo}"
    )
    assert list(tmp_path.iterdir()) == []


def test_status_reads_an_existing_queue_and_flush_creates_one(tmp_path):
    with override_settings(
        MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/queue.db", "TRANSPORT": LOCMEM}
    ):
        assert manage("flush")[0] == 0  # as the site's first send_mail() would
        code, out, _ = manage("status", "--check")
    assert code == 0 and "ready        0" in out


def _schedule_one(spec: str, due_in: float) -> float:
    """A message deferred once, due ``due_in`` seconds from now; its due time."""
    from tests.helpers import record

    store = get_store(spec, "default")
    now = time.time()
    store.enqueue([record(created=now)])
    (claim,) = store.fetch_due(now, 1, 30)
    store.requeue(claim, now + due_in, "451 4.7.1 try later")
    return now + due_in


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_status_shows_when_the_next_scheduled_message_is_due(kind, tmp_path):
    spec = f"memory://{uuid.uuid4().hex}" if kind == "memory" else f"sqlite:///{tmp_path}/q.db"
    with override_settings(MAILQUEUE={"STORE": spec}):
        due = _schedule_one(spec, due_in=600.4)
        code, out, _ = manage("status")
        assert code == 0
        assert "scheduled    1\nnext due     in 600s\n" in out
        assert json.loads(manage("status", "--json")[1])["next_due"] == pytest.approx(due)


class Untold(MemoryStore):
    """A store that does not tell when its next scheduled message is due (optional)."""

    def stats(self, now: float) -> Stats:
        return dataclasses.replace(super().stats(now), next_due=None)


def test_status_says_when_a_store_does_not_tell_the_next_due_time(tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, untold=Untold)
    with override_settings(MAILQUEUE={"STORE": f"untold://{uuid.uuid4().hex}"}):
        assert "next due     -\n" in manage("status")[1]  # none scheduled
        _schedule_one(get_config().store, due_in=600)
        assert "next due     ? (this store does not tell)\n" in manage("status")[1]


def test_progress_under_manage_py_is_not_styled_as_an_error(conf, monkeypatch):
    from mailqueue_core.commands.output import Progress
    from mailqueue_core.management.commands.mailqueue import Command

    send(3)
    monkeypatch.setattr(Progress, "every", 0)
    err = FakeTTY()
    # As on a terminal: Django styles the command's stderr as errors (bold red).
    Command(stdout=io.StringIO(), stderr=err, force_color=True).run_from_argv(
        ["manage.py", "mailqueue", "flush"]
    )
    assert "\r1 sent, 0 deferred, 0 buried" in err.getvalue()
    assert "\x1b[31" not in err.getvalue()
    # A problem still is one.
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        command = Command(stdout=io.StringIO(), stderr=(err := FakeTTY()), force_color=True)
        with pytest.raises(SystemExit):
            command.run_from_argv(["manage.py", "mailqueue", "--skip-checks", "status"])
    assert err.getvalue().startswith("\x1b[31;1mmailqueue: configuration error:")
