"""A Django project with the admin, for the console's tests, inside the suite's process.

The suite runs on ``tests.settings`` (no database, no admin). :func:`admin_project`
overrides what the admin needs (apps, middleware, templates, URLs) and creates the
test database, as Django's test runner would, then puts everything back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.checks.registry import registry
from django.test import override_settings
from django.test.utils import override_system_checks, setup_databases, teardown_databases

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "mailqueue_core",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]
SETTINGS: dict[str, Any] = {
    "INSTALLED_APPS": INSTALLED_APPS,
    "MIDDLEWARE": MIDDLEWARE,
    "TEMPLATES": TEMPLATES,
    "ROOT_URLCONF": "tests.urls_admin",
    "STATIC_URL": "/static/",
    "TIME_ZONE": "UTC",
    "ALLOWED_HOSTS": ["testserver", "localhost", "127.0.0.1"],
    # Fast logins: these tests are about the console, not about password hashing.
    "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
}


@contextlib.contextmanager
def admin_project(**extra: Any) -> Iterator[None]:
    """The admin installed and its database created (tables, permissions) until exit.

    The contrib apps register system checks when they become ready; they go with
    the apps, so that a later ``manage.py check`` in this process does not ask for
    the admin's dependencies.
    """
    checks = registry.get_checks()
    deployment = [
        c for c in registry.get_checks(include_deployment_checks=True) if c not in checks
    ]
    with override_system_checks(checks, deployment), override_settings(**SETTINGS, **extra):
        databases = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
        try:
            yield
        finally:
            teardown_databases(databases, verbosity=0)
