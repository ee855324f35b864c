"""Django app config: adds the ``mailqueue`` management command, the system checks and,
beside ``django.contrib.admin``, the operator's console in the admin
(:mod:`mailqueue_core.admin`, found by the admin's autodiscovery).

Sending works without the app installed; only the command, the checks and the
console need it.
"""

from __future__ import annotations

from django.apps import AppConfig


class MailQueueConfig(AppConfig):
    name = "mailqueue_core"
    verbose_name = "Mail queue"

    def ready(self) -> None:
        from mailqueue_core import checks  # noqa: F401 - registers the checks
