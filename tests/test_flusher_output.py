"""What comes from outside is capped when stored and escaped when shown.

A refusal of hundreds of recipients is stored capped (``mailqueue_core.text.cap``),
whichever way the flusher stores it: a burial, a requeue, a split-off part. An SMTP
reply or a subject holding control characters (``ESC[2J`` clears a terminal) reaches
the operator escaped, in the flusher's log and in ``dead`` and ``status``. Real SMTP
server on loopback, real SQLite files, the real command in a process of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.text import MAX_ERROR
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import record

MANY = 300  # refused recipients: about 13,000 characters of replies
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal acts on


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "mailqueue_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_capped(text: str | None) -> None:
    assert text is not None
    assert len(text) < MAX_ERROR + 100
    assert re.search(r"\.\.\. \(\d+ more characters cut\)$", text), text[-80:]


@pytest.mark.parametrize(
    ("reply", "accepted"),
    [
        ("550 5.1.1 No such user here", False),  # buried whole
        ("451 4.2.1 Mailbox busy, try again later", False),  # requeued whole
        ("550 5.1.1 No such user here", True),  # a dead part split off
        ("451 4.2.1 Mailbox busy, try again later", True),  # a later part split off
    ],
    ids=["bury", "requeue", "split-dead", "split-later"],
)
def test_a_refusal_of_hundreds_of_recipients_is_stored_capped(tmp_path, smtp, reply, accepted):
    store = make_store(f"sqlite:///{tmp_path}/q.db")
    refused = [f"nobody{i}@example.com" for i in range(MANY)]
    now = time.time()
    store.enqueue([record(*(["kept@example.com"] if accepted else []), *refused, created=now)])
    smtp.fault("rcpt", reply, recipients=refused)
    Flusher(store, SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")).flush()
    assert len(smtp.messages) == int(accepted)
    if reply.startswith("550"):
        (letter,) = store.dead_letters()
        assert_capped(letter.reason)
        if accepted:  # a part's reason is its last error
            assert_capped(letter.record.last_error)
    else:
        (claim,) = store.fetch_due(now + 86400, 10, 30)
        assert_capped(claim.record.last_error)
        store.release(claim)
    store.close()


def test_control_characters_from_outside_never_reach_the_terminal(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/q.db"
    with override_settings(MAILQUEUE={"STORE": url}):
        EmailBackend().send_messages(
            [EmailMessage("Hi \x1b]0;owned\x07", "Body", "site@example.com", ["gone@example.com"])]
        )
    smtp.fault("rcpt", "550 5.1.1 \x1b[2J\x1b[31mgone\x9b")
    transport = f"smtp://127.0.0.1:{smtp.port}"
    runs = [
        cli("flush", "--store", url, "--transport", transport, "-v", "2"),
        cli("dead", "--store", url),
        cli("status", "--store", url, "--check"),
    ]
    flushed, dead, status = runs
    assert flushed.returncode == 0 and dead.returncode == 0 and status.returncode == 1
    for done in runs:
        assert not CONTROL.search(done.stdout + done.stderr), done
    assert "\\x1b[2J\\x1b[31mgone\\x9b" in flushed.stderr  # the log line of the burial
    assert "\\x1b[2J" in dead.stdout and "\\x1b]0;owned\\x07" in dead.stdout
