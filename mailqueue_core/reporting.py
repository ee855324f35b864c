"""Keeping the passwords of URL-valued settings out of Django's error pages and ADMINS mails.

Django's :class:`~django.views.debug.SafeExceptionReporterFilter` hides a setting
whose *name* looks secret (``PASSWORD``, ``API_KEY``, any key matching
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE``), but not a password inside a URL:
``MAILQUEUE = {"STORE": "redis://:pw@host/0"}`` is shown in full on the
technical 500 page (``DEBUG = True``) and in every error mail to ``ADMINS``.
The filter here also hides the passwords of URLs, in every setting (``MAILQUEUE``,
``MAILERS`` on Django 6.1, ``CACHES``...) and in the local variables of the
traceback, with :func:`mailqueue_core.locations.redact`::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "mailqueue_core.reporting.SafeExceptionReporterFilter"

The system check ``mailqueue.W004`` says when it is needed and missing. Better
still, keep passwords out of URLs: give them in ``OPTIONS``, under a key that
Django's own filter hides (the operating guide, "Secrets", shows how).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from types import FrameType
from typing import Any

from django.views import debug

from mailqueue_core.locations import redact, redact_value

__all__ = ["SafeExceptionReporterFilter"]


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, plus: no password of a URL is shown, in settings or in variables.

    Unlike Django's own hiding, which is off when ``DEBUG`` is True, this holds on the
    debug page too: a password shown on a developer's screen is a password shared.
    """

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        # Django recurses into dicts, lists and tuples through this method, so the
        # strings of nested settings come here one by one.
        return redact(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(
        self, request: Any, tb_frame: FrameType
    ) -> Iterable[tuple[str, Any]]:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, _hidden(value)) for name, value in variables]


class _Shown:
    """A variable's value, shown by its (redacted) repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _hidden(value: Any) -> Any:
    """``value`` as it may be shown: itself, unless a secret would show through it."""
    if isinstance(value, str | list | tuple) or type(value) is dict:
        with contextlib.suppress(Exception):  # an element that cannot be compared
            cleansed = redact_value(value)
            return value if cleansed == value else cleansed
    try:
        text = repr(value)
    except Exception:  # Django reports a failing repr itself
        return value
    shown = redact(text)
    return value if shown == text else _Shown(shown)
