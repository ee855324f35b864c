"""The operator's console in the Django admin (found by the admin's autodiscovery).

Registered on the default admin site for :class:`~mailqueue_core.models.QueuedMail`
when ``django.contrib.admin`` is installed. The model has no table: the
``ModelAdmin`` replaces the admin's model pages with the console's own
(:class:`~mailqueue_core.console.views.Console`), which read the queue through
the store contract. Nothing can be added or deleted through the admin's model
machinery; staff need ``mailqueue_core.view_queuedmail`` to look and
``mailqueue_core.change_queuedmail`` to act.

To change the page size or the search budget, subclass :class:`QueuedMailAdmin`
and register it in its place (``admin.site.unregister(QueuedMail)`` first).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern

from mailqueue_core.browsing import BUDGET
from mailqueue_core.console.views import Console
from mailqueue_core.models import QueuedMail

__all__ = ["QueuedMailAdmin"]


class QueuedMailAdmin(admin.ModelAdmin):
    """The console's pages in place of the admin's model pages."""

    #: Messages on a page of a list (a search page holds at most as many matches).
    list_per_page = 50
    #: How many messages one search request reads at most before it offers to go on.
    search_budget = BUDGET

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return Console(self).urls()


admin.site.register(QueuedMail, QueuedMailAdmin)
