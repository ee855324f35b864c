"""django-mailer and django-post_office, measured the same way as mailqueue, when installed.

    python -m bench.peers {enqueue,flush} --peer {mailer,post_office} --n N
                          --smtp-port PORT --dir DIR

Run in a process of its own (the benchmark starts it), because each peer needs a
Django project with a database: a SQLite file in WAL mode under ``DIR``, migrated
at start. Prints one JSON object. Only for comparison: ``pip install mailqueue[bench]``.

``enqueue`` times the peer's backend's ``send_messages([message])`` per message;
``flush`` queues N messages through that backend, then times the peer's own
sender draining them (django-mailer's ``send_all``, post_office's
``send_queued`` with one process, called until nothing is queued).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

PEERS = {"mailer": "django-mailer", "post_office": "django-post_office"}
_SMTP = "django.core.mail.backends.smtp.EmailBackend"


def _configure(peer: str, directory: Path, smtp_port: int) -> None:
    import django
    from django.conf import settings

    options: dict[str, Any] = {
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", peer],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(directory / f"{peer}.db"),
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;"},
            }
        },
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": smtp_port,
        "USE_TZ": True,
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        "LOGGING_CONFIG": None,
        # post_office renders subject and bodies as templates at enqueue.
        "TEMPLATES": [{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
    }
    if peer == "mailer":
        options["EMAIL_BACKEND"] = "mailer.backend.DbBackend"
        options["MAILER_EMAIL_BACKEND"] = _SMTP
        options["MAILER_LOCK_PATH"] = str(directory / "mailer")
    else:
        options["EMAIL_BACKEND"] = "post_office.EmailBackend"
        options["POST_OFFICE"] = {"BACKENDS": {"default": _SMTP}}
    settings.configure(**options)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _enqueue(n: int) -> dict[str, Any]:
    from django.core.mail import get_connection

    from bench.workload import receipt

    backend = get_connection()
    messages = [receipt(i) for i in range(n + 50)]
    for message in messages[:50]:  # warm-up: first queries, caches
        backend.send_messages([message])
    times = []
    for message in messages[50:]:
        t0 = time.perf_counter()
        backend.send_messages([message])
        times.append(time.perf_counter() - t0)
    return {"times": times}


def _flush(peer: str, n: int) -> dict[str, Any]:
    from django.core.mail import get_connection

    from bench.workload import receipt

    backend = get_connection()
    for start in range(0, n, 500):
        backend.send_messages([receipt(i) for i in range(start, min(n, start + 500))])
    cpu0, t0 = time.process_time(), time.perf_counter()
    if peer == "mailer":
        from mailer.engine import send_all
        from mailer.models import Message

        send_all()
        left = Message.objects.count()
    else:
        from post_office.mail import send_queued
        from post_office.models import STATUS, Email

        while Email.objects.filter(status=STATUS.queued).exists():
            send_queued(processes=1)
        left = Email.objects.filter(status=STATUS.queued).count()
    wall = time.perf_counter() - t0
    return {"sent": n - left, "wall": wall, "cpu": time.process_time() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("mode", choices=("enqueue", "flush"))
    parser.add_argument("--peer", choices=tuple(PEERS), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    _configure(args.peer, args.dir, args.smtp_port)
    result = _enqueue(args.n) if args.mode == "enqueue" else _flush(args.peer, args.n)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
