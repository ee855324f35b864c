"""Django settings for the test suite."""

SECRET_KEY = "tests-only"
INSTALLED_APPS = ["mailqueue_core"]
DATABASES = {}
USE_TZ = True
DEFAULT_FROM_EMAIL = "site@example.com"
EMAIL_BACKEND = "mailqueue_core.backend.EmailBackend"
MAILQUEUE = {"STORE": "memory://tests"}
