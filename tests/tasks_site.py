"""A site with ``MAILQUEUE["TASK"]`` on and the database task backend, as a subprocess.

``python -m tests.tasks_site MODE SUBJECT`` with ``DJANGO_SETTINGS_MODULE=tests.settings_tasks``
(tests/test_tasks_database.py sets the environment):

- ``commit``: sends one message in a transaction that commits, waits (bounded) for the
  flush tasks it enqueued to finish in the worker, prints them as JSON.
- ``rollback``: sends one in a transaction that rolls back; prints the tasks it
  enqueued and what the queue holds.
- ``check``: prints the ids of the ``mailqueue`` system checks' messages.

The test process cannot be the site: its own database is configured once, in memory,
and the worker needs the site's SQLite file.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import django

WAIT = 30.0


def main(mode: str, subject: str) -> dict[str, Any]:
    django.setup()
    from django.core.checks import run_checks
    from django.core.mail import send_mail
    from django.db import transaction
    from django_tasks.backends.database.models import DBTaskResult

    from mailqueue_core.django_settings import get_config, get_store

    if mode == "check":
        checks = run_checks(tags=["mailqueue"])
        return {"checks": sorted(m.id for m in checks if not m.is_silenced())}
    before = set(DBTaskResult.objects.values_list("id", flat=True))
    if mode == "commit":
        with transaction.atomic():
            send_mail(subject, "body", None, ["r@example.com"])
    else:
        try:
            with transaction.atomic():
                send_mail(subject, "body", None, ["r@example.com"])
                raise RuntimeError("payment failed")
        except RuntimeError:
            pass
    mine = DBTaskResult.objects.exclude(id__in=before)
    deadline = time.monotonic() + WAIT
    while mode == "commit" and mine.filter(finished_at=None).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    config = get_config()
    stats = get_store(config.store, config.namespace).stats(time.time())
    return {
        "tasks": [
            {
                "path": t.task_path,
                "queue": t.queue_name,
                "priority": t.priority,
                "finished": t.finished_at is not None,
                "return_value": t.return_value,
                "traceback": t.traceback,
            }
            for t in mine
        ],
        "queued": stats.ready + stats.scheduled + stats.in_flight,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
