"""Django settings for a site whose flush runs in a task worker (tests/test_tasks_*.py).

The worker and the site run in subprocesses that share what the environment
names: ``MQ_TASKS_DB`` (the site's SQLite database, which the database task
backend uses), ``MQ_TASKS_STORE`` (the queue's store) and its
``MQ_TASKS_NAMESPACE``, ``MQ_TASKS_SMTP_PORT`` (the test's SMTP server),
``MQ_TASKS_TASK`` (``MAILQUEUE["TASK"]`` as JSON) and ``MQ_TASKS_QUEUES`` (the
task backend's queues, comma-separated).
"""

import json
import os

import django

SECRET_KEY = "tests-only"
INSTALLED_APPS = ["mailqueue_core", "django_tasks", "django_tasks.backends.database"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("MQ_TASKS_DB", ":memory:"),
        # The worker and the site write the same file.
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
DEFAULT_FROM_EMAIL = "site@example.com"
TASKS = {
    "default": {
        "BACKEND": "django_tasks.backends.database.DatabaseBackend",
        "QUEUES": os.environ.get("MQ_TASKS_QUEUES", "default").split(","),
    }
}
MAILQUEUE = {
    "STORE": os.environ.get("MQ_TASKS_STORE", "memory://tasks"),
    "NAMESPACE": os.environ.get("MQ_TASKS_NAMESPACE", "default"),
    "TRANSPORT": f"smtp://127.0.0.1:{os.environ.get('MQ_TASKS_SMTP_PORT', '25')}",
    "ON_COMMIT": True,
    "TASK": json.loads(os.environ.get("MQ_TASKS_TASK", "true")),
}
# ON_COMMIT without a FALLBACK_STORE: right for these tests.
SILENCED_SYSTEM_CHECKS = ["mailqueue.W003"]

if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "mailqueue_core.backend.EmailBackend"}}
else:
    EMAIL_BACKEND = "mailqueue_core.backend.EmailBackend"
