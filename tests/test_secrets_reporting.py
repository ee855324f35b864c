"""Django's error pages and ADMINS mails never show a password of a queue URL.

Through Django's own rendering: the technical 500 page (``DEBUG = True``) and the
reporter the ADMINS mail handler uses (``is_email=True``), text and HTML, with
``DEFAULT_EXCEPTION_REPORTER_FILTER`` set as the docs say; and the system check that
says when it is missing.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import RequestFactory, override_settings
from django.views import debug

from mailqueue_core.config import Config
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.reporting import SafeExceptionReporterFilter

FILTER = "mailqueue_core.reporting.SafeExceptionReporterFilter"
STORE_PW = "storepw-7f3a"
SMTP_PW = "smtppw-91bc"
ODD_PW = "odd/pw@9:x"  # not percent-encoded: "/", "@" and ":" in it
OPTION_PW = "optionpw-44d1"
SECRETS = (STORE_PW, SMTP_PW, ODD_PW, "odd/pw", OPTION_PW)
MAILQUEUE = {
    "STORE": f"redis://:{STORE_PW}@redis.internal:6379/0",
    "FALLBACK_STORE": f"redis://user:{ODD_PW}@fallback.internal/1",
    "TRANSPORT": [f"smtp://site:{SMTP_PW}@smtp.example.com:587?starttls=true", "smtp"],
    "TRANSPORTS": {"bulk": {"NAME": "smtp://bulk.internal", "OPTIONS": {"password": OPTION_PW}}},
}
# Django 6.1's MAILERS can carry the queue's settings in the mailer's OPTIONS.
urlpatterns: list[Any] = []  # the debug page resolves the request's URL
MAILERS = {
    "default": {
        "BACKEND": "mailqueue_core.backend.EmailBackend",
        "OPTIONS": {"store": f"redis://:{STORE_PW}@redis.internal:6379/0"},
    }
}


@pytest.fixture(autouse=True)
def _fresh_filter():
    # Django builds the default filter once per process (an lru_cache).
    debug.get_default_exception_reporter_filter.cache_clear()
    yield
    debug.get_default_exception_reporter_filter.cache_clear()


def _fail_while_holding_secrets() -> None:
    url = MAILQUEUE["STORE"]  # noqa: F841 - a local variable the page shows
    options = {"NAME": MAILQUEUE["FALLBACK_STORE"], "OPTIONS": {"password": OPTION_PW}}  # noqa: F841
    config = Config.from_settings(MAILQUEUE)  # noqa: F841
    urls = (MAILQUEUE["FALLBACK_STORE"], [MAILQUEUE["TRANSPORT"][0]])  # noqa: F841
    raise RuntimeError("the store went away")


def rendered(**settings: Any) -> dict[str, str]:
    """The technical 500 page and both parts of the ADMINS mail, for one failure."""
    request = RequestFactory().get("/checkout/")
    with override_settings(
        MAILQUEUE=MAILQUEUE, MAILERS=MAILERS, ROOT_URLCONF=__name__, **settings
    ):
        try:
            _fail_while_holding_secrets()
        except RuntimeError:
            exc_info = sys.exc_info()
        with override_settings(DEBUG=True):
            page = debug.technical_500_response(request, *exc_info).content.decode()
        mail = debug.ExceptionReporter(request, *exc_info, is_email=True)
        return {
            "debug page": page,
            "mail text": mail.get_traceback_text(),
            "mail html": mail.get_traceback_html(),
        }


def shown_secrets(outputs: dict[str, str]) -> dict[str, list[str]]:
    return {
        where: [s for s in SECRETS if s in text]
        for where, text in outputs.items()
        if any(s in text for s in SECRETS)
    }


def test_django_s_own_filter_shows_the_passwords_of_urls():
    # What the filter is for: without it, the page and the mail show them.
    outputs = rendered(
        DEFAULT_EXCEPTION_REPORTER_FILTER="django.views.debug.SafeExceptionReporterFilter"
    )
    assert STORE_PW in outputs["debug page"] and STORE_PW in outputs["mail text"]


def test_the_filter_hides_them_on_the_debug_page_and_in_admins_mails():
    outputs = rendered(DEFAULT_EXCEPTION_REPORTER_FILTER=FILTER)
    assert shown_secrets(outputs) == {}
    for text in outputs.values():
        assert "the store went away" in text  # the report itself is all there
        assert "redis.internal:6379/0" in text and "***@" in text


def test_the_filter_keeps_everything_else():
    reporter_filter = SafeExceptionReporterFilter()
    with override_settings(MAILQUEUE=MAILQUEUE):
        cleansed = reporter_filter.cleanse_setting("MAILQUEUE", MAILQUEUE)
    assert cleansed["STORE"] == "redis://:***@redis.internal:6379/0"
    assert cleansed["TRANSPORT"][1] == "smtp"
    assert cleansed["TRANSPORTS"]["bulk"]["NAME"] == "smtp://bulk.internal"
    assert (
        cleansed["TRANSPORTS"]["bulk"]["OPTIONS"]["password"]
        == reporter_filter.cleansed_substitute
    )
    # Values without a secret stay the very objects they were.
    plain = {"a": 1}
    frame_value = dict(
        debug_values(reporter_filter, plain=plain, text="no url here", number=5, odd=Unprintable())
    )
    assert frame_value["plain"] is plain and frame_value["text"] == "no url here"
    assert isinstance(frame_value["odd"], Unprintable)


class Unprintable:
    def __repr__(self) -> str:
        raise ValueError("no repr")


class Holder:
    def __repr__(self) -> str:
        return f"<Holder url=redis://:{STORE_PW}@h/0>"


def debug_values(reporter_filter, **variables):
    """The frame variables the filter lets a report show, for a frame holding ``variables``."""
    frame = _frame_holding(**variables)
    return [(k, v) for k, v in reporter_filter.get_traceback_frame_variables(None, frame)]


def _frame_holding(plain=None, text=None, number=None, odd=None, holder=None, broken=None):
    return sys._getframe()  # its local variables are the arguments


def test_objects_whose_repr_holds_a_password_are_shown_redacted():
    reporter_filter = SafeExceptionReporterFilter()
    shown = dict(debug_values(reporter_filter, holder=Holder(), broken=[Unprintable()]))
    assert repr(shown["holder"]) == "<Holder url=redis://:***@h/0>"


def ids(messages):
    return sorted(m.id for m in messages)


def test_check_warns_when_a_queue_url_holds_a_password_and_the_filter_shows_it():
    with override_settings(MAILQUEUE={"STORE": f"redis://:{STORE_PW}@h/0"}):
        (warning,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.W004"]
        assert "MAILQUEUE['STORE'] holds a URL with a password" in warning.msg
        assert FILTER in warning.hint and "OPTIONS" in warning.hint
        assert STORE_PW not in warning.msg + warning.hint
    with override_settings(MAILQUEUE=MAILQUEUE):
        (warning,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.W004"]
        assert "MAILQUEUE['FALLBACK_STORE'], MAILQUEUE['TRANSPORT'][0]" in warning.msg


@pytest.mark.parametrize(
    "settings",
    [
        # The filter is set.
        {"MAILQUEUE": MAILQUEUE, "DEFAULT_EXCEPTION_REPORTER_FILTER": FILTER},
        # Another filter that hides them (Django's stars in place of the password).
        {"MAILQUEUE": MAILQUEUE, "DEFAULT_EXCEPTION_REPORTER_FILTER": f"{__name__}.Stars"},
        # Passwords in OPTIONS, where Django's filter hides them by their key.
        {
            "MAILQUEUE": {
                "STORE": {"NAME": "redis://h/0", "OPTIONS": {"client_options": {"password": "x"}}},
                "TRANSPORT": {"NAME": "smtp://u@h:587", "OPTIONS": {"password": "x"}},
            }
        },
        # A filter that cannot be imported is Django's to report.
        {"MAILQUEUE": MAILQUEUE, "DEFAULT_EXCEPTION_REPORTER_FILTER": "no.such.Filter"},
    ],
)
def test_check_is_quiet_when_the_passwords_are_hidden(settings):
    with override_settings(**settings):
        assert "mailqueue.W004" not in ids(run_checks(tags=["mailqueue"]))


def test_check_looks_at_mailers_too():
    with override_settings(MAILERS=MAILERS):
        (warning,) = [m for m in run_checks(tags=["mailqueue"]) if m.id == "mailqueue.W004"]
    assert "MAILERS['default']['OPTIONS']['store']" in warning.msg


class Stars(debug.SafeExceptionReporterFilter):
    """A site's own filter that replaces URL passwords with Django's stars."""

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str) and "@" in cleansed:
            scheme, _, rest = cleansed.partition("://")
            user = rest.split(":", 1)[0]
            return f"{scheme}://{user}:{self.cleansed_substitute}@{rest.rpartition('@')[2]}"
        return cleansed


def test_the_documented_options_form_works_and_keeps_the_password_hidden(
    redis_server_factory,
):
    # docs/operating.rst, "Secrets": the Redis password in OPTIONS, not in the URL.
    server = redis_server_factory("--requirepass", STORE_PW, appendonly=False)
    mailqueue = {
        "STORE": {"NAME": server.url, "OPTIONS": {"client_options": {"password": STORE_PW}}}
    }
    with override_settings(MAILQUEUE=mailqueue):
        assert ids(run_checks(tags=["mailqueue"], include_deployment_checks=True)) == []
        store = get_store(get_config().store, "secrets-doc")
        assert store.stats(0.0).ready == 0  # it logged in
        # Django's own filter hides it there, by its key.
        shown = debug.SafeExceptionReporterFilter().cleanse_setting("MAILQUEUE", mailqueue)
    assert STORE_PW not in repr(shown)
