"""Django app config: adds the ``mailqueue`` management command and system checks.

Sending works without the app installed; only the command and checks need it.
"""

from __future__ import annotations

from django.apps import AppConfig


class MailQueueConfig(AppConfig):
    name = "mailqueue_core"
    verbose_name = "Mail queue"

    def ready(self) -> None:
        from mailqueue_core import checks  # noqa: F401 - registers the checks
