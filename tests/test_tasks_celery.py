"""The Celery pattern (docs/tasks.rst) with a real Celery worker and the tests' Redis.

``celery -A tests.celery_app worker --pool solo`` runs in a subprocess, one for the
module, its broker a Redis started by tests/servers/redis.py (a free port, never
6379) on a queue of its own. The queue of mail is a namespace on the same Redis, so
this process (the site) and the worker share it; the worker delivers to an SMTP
server in this process (the ``smtp`` fixture, module-scoped here: the worker reads
its port once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import send_mail
from django.db import transaction
from django.test import override_settings

from mailqueue_core.signals import message_queued
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from tests.servers.redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smtp() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer() as server:
        yield server


@pytest.fixture(scope="module")
def celery_app(
    redis_server: RedisServer, smtp: FaultySMTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The app of tests/celery_app.py, a worker running it, and this process's settings."""
    try:
        from tests import celery_app
    except ImportError as exc:
        pytest.fail(f"the Celery tests need Celery: pip install 'celery>=5.3' ({exc})")
    name = f"mq-celery-{uuid.uuid4().hex[:8]}"
    celery_app.app.conf.update(
        broker_url=redis_server.url, result_backend=redis_server.url, task_default_queue=name
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings_tasks",
        "MQ_CELERY_BROKER": redis_server.url,
        "MQ_CELERY_QUEUE": name,
        "MQ_TASKS_STORE": redis_server.url,
        "MQ_TASKS_NAMESPACE": name,
        "MQ_TASKS_SMTP_PORT": str(smtp.port),
        "MQ_TASKS_TASK": "false",
    }
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    log = log_path.open("w")
    command = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"]
    command += ["--pool", "solo", "-Q", name, "-n", f"{name}@%h", "--loglevel", "INFO"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = {
        "STORE": redis_server.url,
        "NAMESPACE": name,
        "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}",
    }
    message_queued.connect(celery_app.flush_soon, dispatch_uid="tests.celery_app")
    try:
        with override_settings(MAILQUEUE=settings):
            yield celery_app
    finally:
        message_queued.disconnect(dispatch_uid="tests.celery_app")
        worker.terminate()  # a warm shutdown: the task in hand finishes
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        celery_app.app.close()
    assert worker.returncode == 0, log_path.read_text()


def test_mail_queued_here_is_delivered_by_the_celery_worker(
    celery_app: Any, smtp: FaultySMTPServer
) -> None:
    smtp.clear()
    with transaction.atomic():
        send_mail("your receipt", "body", "shop@example.com", ["customer@example.com"])
    (received,) = smtp.wait_for(1, timeout=60)
    assert b"Subject: your receipt" in received.data
    assert received.rcpt_tos == ["customer@example.com"]


def test_the_task_returns_the_flush_summary(celery_app: Any, smtp: FaultySMTPServer) -> None:
    result = celery_app.flush_mail.delay(limit=10).get(timeout=60)
    assert result == {
        "sent": 0,
        "deferred": 0,
        "buried": 0,
        "elapsed": result["elapsed"],
        "paused": False,
        "error": None,
    }
