"""The queue's place in the Django admin: a model with no table.

The queue lives in the store, not in the site's database, so :class:`QueuedMail`
is unmanaged (``migrate`` creates no table for it, and nothing ever queries
it). It exists for what Django attaches to a model: an entry in the admin's
index, where :mod:`mailqueue_core.admin` serves the console, and two
permissions of its own, ``mailqueue_core.view_queuedmail`` (look) and
``mailqueue_core.change_queuedmail`` (act: send now, delete, retry, purge,
pause). The app has no migrations module: Django treats it as unmigrated,
``makemigrations`` asks nothing of it, and ``migrate`` still creates its
content type and permissions (they are made after every ``migrate`` for every
installed app with a models module).
"""

from __future__ import annotations

from django.db import models

__all__ = ["QueuedMail"]


class QueuedMail(models.Model):
    """The mail in the queue store, as the admin names it (never a table)."""

    # Explicit, so that no DEFAULT_AUTO_FIELD warning (models.W042) asks a site
    # to configure a primary key for a table that does not exist.
    id = models.CharField(primary_key=True, max_length=255)

    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "queued mail"
        verbose_name_plural = "queued mail"
