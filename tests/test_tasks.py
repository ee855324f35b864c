"""``MAILQUEUE["TASK"]``: the flush task (mailqueue_core.tasks), its setting and its checks.

In this process the task backend is the default one, which is immediate (Django's
own on Django >= 6.0, the django-tasks backport's before): ``enqueue()`` runs the
flush at once, so what it did is known when the send returns. A real worker runs
it in tests/test_tasks_database.py, Celery in tests/test_tasks_celery.py.
"""

from __future__ import annotations

import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.mail import EmailMessage, send_mail
from django.db import transaction
from django.test import override_settings

from mailqueue_core import codec, tasks
from mailqueue_core.backend import EmailBackend
from mailqueue_core.config import ALLOWED, Config, TaskSetting
from mailqueue_core.django_settings import get_store
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.testing.smtpserver import FaultySMTPServer

FLUSH = "mailqueue_core.tasks.flush"


def settings_for(smtp: FaultySMTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "STORE": f"memory://{uuid.uuid4().hex}",
        "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}",
        "TASK": True,
        **extra,
    }


@pytest.fixture
def enqueued() -> Iterator[list[Any]]:
    """The flush tasks enqueued while the test runs (the framework's own signal)."""
    signals = importlib.import_module(f"{tasks.framework.__name__}.signals")
    seen: list[Any] = []

    def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
        if task_result.task.module_path == FLUSH:
            seen.append(task_result)

    signals.task_enqueued.connect(record, dispatch_uid="tests.test_tasks")
    yield seen
    signals.task_enqueued.disconnect(dispatch_uid="tests.test_tasks")


def queued(conf: dict[str, Any]) -> int:
    stats = get_store(conf["STORE"], "default").stats(2e9)
    return stats.ready + stats.scheduled


def message(subject: str = "hello", to: str = "r@example.com") -> EmailMessage:
    return EmailMessage(subject, "body", "site@example.com", [to])


def check_ids() -> list[str]:
    return sorted(m.id for m in run_checks(tags=["mailqueue"]))


@pytest.fixture
def without_a_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither django.tasks nor django_tasks can be imported (None in sys.modules), and
    mailqueue_core.tasks was never imported."""
    import mailqueue_core

    monkeypatch.setitem(sys.modules, "django.tasks", None)
    monkeypatch.setitem(sys.modules, "django_tasks", None)
    monkeypatch.delitem(sys.modules, "mailqueue_core.tasks")
    monkeypatch.delattr(mailqueue_core, "tasks")


# The setting


def test_off_by_default() -> None:
    assert Config.from_settings({"STORE": "memory://"}).task is None
    assert Config.from_settings({"STORE": "memory://", "TASK": False}).task is None


def test_true_and_a_dict() -> None:
    assert Config.from_settings({"STORE": "memory://", "TASK": True}).task == TaskSetting()
    task = Config.from_settings(
        {"STORE": "memory://", "TASK": {"BACKEND": "mail", "QUEUE_NAME": "q", "PRIORITY": -5}}
    ).task
    assert task == TaskSetting("mail", "q", -5)
    assert task.using() == {"backend": "mail", "queue_name": "q", "priority": -5}
    assert TaskSetting().using() == {"backend": "default", "queue_name": "default"}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("yes", r"MAILQUEUE\['TASK'\] must be False, True, or a dict"),
        (1, r"MAILQUEUE\['TASK'\] must be"),
        ({"QUEUE": "mail"}, r"unknown key\(s\): QUEUE \(did you mean 'QUEUE_NAME'\?\)"),
        ({"QUEUE_NAME": ""}, r"\['QUEUE_NAME'\] must be a non-empty string"),
        ({"BACKEND": 3}, r"\['BACKEND'\] must be a non-empty string, got 3"),
        ({"PRIORITY": 101}, r"\['PRIORITY'\] must be an integer from -100 to 100, got 101"),
        ({"PRIORITY": True}, r"\['PRIORITY'\] must be an integer"),
        ({"PRIORITY": 1.5}, r"\['PRIORITY'\] must be an integer"),
    ],
)
def test_bad_settings_name_the_key(value: Any, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as raised:
        Config.from_settings({"STORE": "memory://", "TASK": value})
    assert raised.value.key == "TASK"


def test_a_bad_setting_is_a_check_error_with_what_it_takes() -> None:
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": "yes"}):
        (error,) = run_checks(tags=["mailqueue"])
    assert error.id == "mailqueue.E001"
    assert ALLOWED["TASK"] in error.hint


# Enqueued by the backend


def test_one_flush_per_send_delivers_the_mail(smtp: FaultySMTPServer, enqueued: list[Any]) -> None:
    conf = settings_for(smtp)
    with override_settings(MAILQUEUE=conf):
        sent = EmailBackend().send_messages([message("a"), message("b"), message("c")])
    assert sent == 3
    (result,) = enqueued
    assert result.errors == []
    assert result.return_value["sent"] == 3
    assert len(smtp.messages) == 3
    assert queued(conf) == 0


def test_off_enqueues_nothing(smtp: FaultySMTPServer, enqueued: list[Any]) -> None:
    conf = settings_for(smtp, TASK=False)
    with override_settings(MAILQUEUE=conf):
        assert send_mail("s", "b", None, ["r@example.com"]) == 1
    assert enqueued == []
    assert queued(conf) == 1


def test_nothing_queued_no_task(
    smtp: FaultySMTPServer, enqueued: list[Any], unused_tcp_port: int
) -> None:
    with override_settings(MAILQUEUE=settings_for(smtp)):
        assert EmailBackend().send_messages([]) == 0
        assert EmailBackend().send_messages([EmailMessage("no one", "b", "a@x.com", [])]) == 0
    down = settings_for(smtp, STORE=f"redis://127.0.0.1:{unused_tcp_port}/0")
    with override_settings(MAILQUEUE=down):
        assert EmailBackend(fail_silently=True).send_messages([message()]) == 0
    assert enqueued == []


def test_with_on_commit_a_rollback_sends_nothing_and_a_commit_flushes(
    smtp: FaultySMTPServer, enqueued: list[Any]
) -> None:
    conf = settings_for(smtp, ON_COMMIT=True)
    with override_settings(MAILQUEUE=conf):
        with pytest.raises(RuntimeError), transaction.atomic():
            send_mail("rolled back", "b", None, ["r@example.com"])
            raise RuntimeError("payment failed")
        assert enqueued == []
        with transaction.atomic():
            send_mail("committed", "b", None, ["r@example.com"])
            assert enqueued == []
        assert len(enqueued) == 1
    (received,) = smtp.messages
    assert b"Subject: committed" in received.data


def test_without_on_commit_the_task_still_waits_for_the_commit(
    smtp: FaultySMTPServer, enqueued: list[Any]
) -> None:
    conf = settings_for(smtp)
    with override_settings(MAILQUEUE=conf):
        with transaction.atomic():
            send_mail("queued at once", "b", None, ["r@example.com"])
            assert queued(conf) == 1
            assert enqueued == []
        assert len(enqueued) == 1
    assert queued(conf) == 0
    assert len(smtp.messages) == 1


def test_a_task_that_cannot_be_enqueued_is_logged_and_the_mail_stays_queued(
    smtp: FaultySMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The default backend has only the "default" queue.
    conf = settings_for(smtp, TASK={"QUEUE_NAME": "mail"})
    with override_settings(MAILQUEUE=conf):
        assert send_mail("s", "b", None, ["r@example.com"]) == 1
    assert queued(conf) == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not enqueue the flush task" in record.getMessage()
    assert "Queue 'mail' is not valid" in record.getMessage()


def test_without_a_framework_the_send_logs_and_queues(
    smtp: FaultySMTPServer, caplog: pytest.LogCaptureFixture, without_a_framework: None
) -> None:
    conf = settings_for(smtp)
    with override_settings(MAILQUEUE=conf):
        assert send_mail("s", "b", None, ["r@example.com"]) == 1
    assert queued(conf) == 1
    assert "ImportError" in caplog.text and "pip install django-tasks" in caplog.text


# The task


def test_the_task_returns_a_json_summary(smtp: FaultySMTPServer) -> None:
    conf = settings_for(smtp, TASK=False)
    with override_settings(MAILQUEUE=conf):
        EmailBackend().send_messages([message("1"), message("2"), message("3")])
        result = tasks.flush.enqueue(limit=2, time_limit=30)
        assert result.errors == []
        assert result.return_value == {
            "sent": 2,
            "deferred": 0,
            "buried": 0,
            "elapsed": result.return_value["elapsed"],
            "paused": False,
            "error": None,
        }
        assert tasks.flush.enqueue(time_limit=0.5).return_value["sent"] == 1


def test_delivery_failures_are_mailqueues_to_retry(
    smtp: FaultySMTPServer, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    smtp.fault("rcpt", "550 5.1.1 No such user", recipients=["gone@example.com"])
    conf = settings_for(smtp, TASK=False)
    with override_settings(MAILQUEUE=conf):
        EmailBackend().send_messages([message("gone", to="gone@example.com")])
        result = tasks.flush.enqueue()
        assert result.errors == []
        assert (result.return_value["sent"], result.return_value["buried"]) == (0, 1)
    assert "1 message(s) buried" in caplog.text
    down = {**conf, "TRANSPORT": f"smtp://127.0.0.1:{unused_tcp_port}"}
    with override_settings(MAILQUEUE=down):
        EmailBackend().send_messages([message("later")])
        result = tasks.flush.enqueue()
        assert result.errors == []
        assert result.return_value["deferred"] == 1
        stats = get_store(conf["STORE"], "default").stats(0)
        assert stats.scheduled == 1, "requeued with mailqueue's backoff"


def test_a_store_that_cannot_be_reached_is_reported_not_raised(
    unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{unused_tcp_port}/0"
    with override_settings(MAILQUEUE={"STORE": url}):
        result = tasks.flush.enqueue()
    assert result.errors == []
    assert result.return_value["sent"] == 0
    assert "unreachable" in result.return_value["error"]
    assert "the mail waits in it" in caplog.text
    assert "hunter2" not in result.return_value["error"] + caplog.text


def test_a_configuration_error_fails_the_task() -> None:
    with override_settings(MAILQUEUE={"STORE": "memory://", "TRANSPORT": "carrier-pigeon"}):
        with pytest.raises(ConfigurationError, match="carrier-pigeon"):
            tasks.flush.call()
        result = tasks.flush.enqueue()
    assert result.status == tasks.framework.TaskResultStatus.FAILED


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"limit": 0}, "limit must be None or a positive integer, got 0"),
        ({"limit": True}, "limit must be None or a positive integer"),
        ({"limit": 2.5}, "limit must be None or a positive integer"),
        ({"time_limit": "5m"}, "time_limit must be None or a positive number of seconds"),
    ],
)
def test_bad_arguments(arguments: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        tasks.flush.call(**arguments)


def test_mail_in_the_fallback_store_is_delivered(
    smtp: FaultySMTPServer, tmp_path: Any, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailqueue")
    fallback = f"sqlite:///{tmp_path}/fallback.db"
    down = f"redis://127.0.0.1:{unused_tcp_port}/0"
    conf = settings_for(smtp, STORE=down, FALLBACK_STORE=fallback)
    with override_settings(MAILQUEUE=conf):
        assert send_mail("kept", "b", None, ["r@example.com"]) == 1
    assert len(smtp.messages) == 1, "delivered straight from the fallback, the store is down"
    assert "delivering straight from the fallback store" in caplog.text
    # The store is up again: the fallback's mail moves into it first.
    get_store(fallback, "default", "FALLBACK_STORE").enqueue([codec.to_record(_captured("moved"))])
    with override_settings(MAILQUEUE={**conf, "STORE": f"memory://{uuid.uuid4().hex}"}):
        assert tasks.flush.call()["sent"] == 1
    assert "moved 1 message(s) from the fallback store into the store" in caplog.text
    assert len(smtp.messages) == 2


def _captured(subject: str) -> Any:
    from mailqueue_core import convert

    item = convert.capture(message(subject))
    item.created = item.due = 0.0
    return item


# The module and the checks


def test_importing_without_a_framework_says_what_to_install(without_a_framework: None) -> None:
    with pytest.raises(ImportError, match=r"Django >= 6\.0 .*pip install django-tasks"):
        importlib.import_module("mailqueue_core.tasks")


def test_the_task_is_defined_for_the_sites_queue_where_the_backend_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mailqueue_core

    monkeypatch.setattr(mailqueue_core, "tasks", tasks)  # put back afterwards, as sys.modules
    monkeypatch.delitem(sys.modules, "mailqueue_core.tasks")
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": {"PRIORITY": 7}}):
        assert importlib.import_module("mailqueue_core.tasks").flush.priority == 7
    monkeypatch.delitem(sys.modules, "mailqueue_core.tasks")
    # A queue the backend refuses: defined for the default one, so that it imports;
    # the check (mailqueue.E005) and the send's log say what is wrong.
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": {"QUEUE_NAME": "mail"}}):
        assert importlib.import_module("mailqueue_core.tasks").flush.queue_name == "default"
    monkeypatch.delitem(sys.modules, "mailqueue_core.tasks")
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": "yes"}):
        assert importlib.import_module("mailqueue_core.tasks").flush.queue_name == "default"


def test_check_warns_that_an_immediate_backend_flushes_inside_the_request() -> None:
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": True}):
        (warning,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.W008"]
    assert "runs it inside the request" in warning.msg
    assert "db_worker" in warning.hint
    with override_settings(MAILQUEUE={"STORE": "memory://"}):
        assert "mailqueue.W008" not in check_ids()


def test_check_error_when_the_backend_refuses_the_task() -> None:
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": {"BACKEND": "nowhere"}}):
        (error,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.E005"]
    assert "TASKS['nowhere']" in error.msg
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": {"QUEUE_NAME": "mail"}}):
        assert "mailqueue.E005" in check_ids()


def test_check_error_without_a_framework(without_a_framework: None) -> None:
    with override_settings(MAILQUEUE={"STORE": "memory://", "TASK": True}):
        (error,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.E005"]
    assert "pip install django-tasks" in error.msg + error.hint
