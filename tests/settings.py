"""Django settings for the test suite."""

import django

SECRET_KEY = "tests-only"
INSTALLED_APPS = ["mailqueue_core"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
DEFAULT_FROM_EMAIL = "site@example.com"
MAILQUEUE = {"STORE": "memory://tests"}

if django.VERSION >= (6, 1):
    # EMAIL_BACKEND is deprecated from Django 6.1 on.
    MAILERS = {"default": {"BACKEND": "mailqueue_core.backend.EmailBackend"}}
else:
    EMAIL_BACKEND = "mailqueue_core.backend.EmailBackend"
