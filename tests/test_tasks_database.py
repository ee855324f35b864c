"""``MAILQUEUE["TASK"]`` with a real task worker: the database backend and its ``db_worker``.

The site (tests/tasks_site.py) and the worker are subprocesses sharing a SQLite
database (the task backend's) and a SQLite queue; the worker delivers to an SMTP
server in this process. One worker serves the module, so the SMTP server lives as
long (the ``smtp`` fixture of tests/conftest.py, module-scoped here: the worker reads
its port once).

The database backend is the ``django-tasks`` backport's
(``django_tasks.backends.database``, up to 0.11; 0.12 moved it to the
``django-tasks-db`` package, which needs Django >= 5.2). On Django >= 6.0 the
flush task is defined and enqueued through Django's ``django.tasks``, on that backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailqueue_core.testing.smtpserver import FaultySMTPServer

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "pip install 'django-tasks>=0.7,<0.12'"


@pytest.fixture(scope="module")
def smtp() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer() as server:
        yield server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, smtp: FaultySMTPServer) -> Iterator[dict]:
    """The environment of the site's processes, with a ``db_worker`` running for them."""
    try:
        import django_tasks.backends.database  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"the task worker tests need the django-tasks database backend: {INSTALL} ({exc})"
        )
    directory = tmp_path_factory.mktemp("tasks-site")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings_tasks",
        "MQ_TASKS_DB": str(directory / "site.db"),
        "MQ_TASKS_STORE": f"sqlite:///{directory}/queue.db",
        "MQ_TASKS_SMTP_PORT": str(smtp.port),
        "MQ_TASKS_QUEUES": "default,mail",
        "MQ_TASKS_TASK": json.dumps({"QUEUE_NAME": "mail", "PRIORITY": 10}),
    }
    migrate = [sys.executable, "-m", "django", "migrate", "-v", "0"]
    done = subprocess.run(migrate, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    log = (directory / "worker.log").open("w")
    command = [sys.executable, "-m", "django", "db_worker", "--queue-name", "mail"]
    command += ["--interval", "0.05", "--no-startup-delay", "--no-reload"]
    worker = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield env
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    # SIGTERM between tasks: db_worker exits 0.
    assert worker.returncode == 0, (directory / "worker.log").read_text()


def run_site(env: dict, mode: str, subject: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.tasks_site", mode, subject],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_committed_mail_is_delivered_by_the_worker(site: dict, smtp: FaultySMTPServer) -> None:
    smtp.clear()
    ran = run_site(site, "commit", "order 1 confirmed")
    assert [(t["path"], t["queue"], t["priority"]) for t in ran["tasks"]] == [
        ("mailqueue_core.tasks.flush", "mail", 10)
    ], "one flush task per send, on the queue and priority of MAILQUEUE['TASK']"
    task = ran["tasks"][0]
    assert task["finished"], "the worker did not finish the flush task in time"
    assert task["return_value"] == {
        "sent": 1,
        "deferred": 0,
        "buried": 0,
        "elapsed": task["return_value"]["elapsed"],
        "paused": False,
        "error": None,
    }, task["traceback"]
    (received,) = smtp.wait_for(1)
    assert b"Subject: order 1 confirmed" in received.data
    assert ran["queued"] == 0


def test_a_rollback_queues_no_mail_and_enqueues_no_task(
    site: dict, smtp: FaultySMTPServer
) -> None:
    smtp.clear()
    ran = run_site(site, "rollback", "order 2 failed")
    assert ran == {"tasks": [], "queued": 0}
    # The worker still delivers the next committed mail, and only that.
    after = run_site(site, "commit", "order 3 confirmed")
    assert [t["return_value"]["sent"] for t in after["tasks"]] == [1]
    assert [m.data.count(b"order 3 confirmed") for m in smtp.wait_for(1)] == [1]
    assert len(smtp.messages) == 1


def test_no_check_message_with_a_worker_backend(site: dict) -> None:
    assert run_site(site, "check")["checks"] == []


def test_a_backend_without_the_default_queue(site: dict) -> None:
    only_mail = {**site, "MQ_TASKS_QUEUES": "mail"}
    # The task is defined for MAILQUEUE['TASK']'s queue, so the site and the worker import it.
    assert run_site(only_mail, "check")["checks"] == []
    # A TASK on a queue the backend lacks is reported at startup.
    assert run_site({**only_mail, "MQ_TASKS_TASK": "true"}, "check")["checks"] == [
        "mailqueue.E005"
    ]
