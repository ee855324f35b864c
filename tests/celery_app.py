"""The Celery pattern of docs/tasks.rst, as tests/test_tasks_celery.py runs it.

The worker is ``celery -A tests.celery_app worker --pool solo`` with
``DJANGO_SETTINGS_MODULE=tests.settings_tasks`` (Celery's Django fix-up calls
``django.setup()``); the broker is the test's Redis (``MQ_CELERY_BROKER``), the
queue ``MQ_CELERY_QUEUE``, a name of the test's own. The test process imports the
same app to send the task.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from django.db import transaction

from mailqueue_core.task_flush import run_flush

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_tasks")

app = Celery("mailqueue_tests")
app.conf.update(
    broker_url=os.environ.get("MQ_CELERY_BROKER", "memory://"),
    result_backend=os.environ.get("MQ_CELERY_BROKER", "cache+memory://"),
    result_expires=300,
    task_default_queue=os.environ.get("MQ_CELERY_QUEUE", "mail"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


# No autoretry: a message that cannot be delivered now is requeued by mailqueue with
# its backoff; the task itself fails only for a configuration error.
@app.task(name="mail.flush")
def flush_mail(limit: int | None = None, time_limit: float | None = None) -> dict[str, Any]:
    return run_flush(limit=limit, time_limit=time_limit)


def flush_soon(sender: Any, **kwargs: Any) -> None:
    """A ``message_queued`` receiver: the flush task, once the transaction commits.

    robust: a broker that is down must not fail the request; the mail is queued."""
    transaction.on_commit(flush_mail.delay, robust=True)
