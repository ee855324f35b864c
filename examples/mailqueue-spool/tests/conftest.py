"""Django for these tests.

This package ships no settings module (the main repository's ``tests.settings``
is not installed with mailqueue), so it configures Django itself, as any
project that tests a plugin outside a site would. Each test sets ``MAILQUEUE``
with ``override_settings``.
"""

from __future__ import annotations

import django
import pytest
from django.conf import settings


def pytest_configure(config: pytest.Config) -> None:
    if not settings.configured:
        settings.configure(
            SECRET_KEY="mailqueue-spool-tests",
            INSTALLED_APPS=["mailqueue_core"],
            DATABASES={},
            USE_TZ=True,
            DEFAULT_FROM_EMAIL="site@example.com",
        )
        django.setup()
