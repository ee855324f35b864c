"""One redaction for every URL printed anywhere: the function, and the places that print URLs.

``manage.py check`` output goes to terminals and CI logs: whatever is wrong with a store URL
that holds a password, the password is never in it.
"""

from __future__ import annotations

import io
import traceback

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from mailqueue_core import plugins
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact, redact_value

SECRET = "hunter2"


def printed(exc: BaseException | None) -> str:
    """The messages a traceback prints: the exception's and those it chains."""
    shown = []
    while exc is not None:
        shown.append("".join(traceback.format_exception_only(type(exc), exc)))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "".join(shown)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("smtp://user:hunter2@host", "smtp://user:***@host"),
        # Passwords that were not percent-encoded.
        ("redis://:hun/ter2@host/0", "redis://:***@host/0"),
        ("redis://:hun@ter:2@host/0", "redis://:***@host/0"),
        ("redis://u:p/a@b:c@h1:1,h2:2/0?db=1", "redis://u:***@h1:1,h2:2/0?db=1"),
        (
            "smtp://me@example.com:hunter/2@smtp.example.com:587",
            "smtp://me@example.com:***@smtp.example.com:587",
        ),
        ("redis://:hunter?#2@host/0", "redis://:***@host/0"),
        ("redis+sentinel://:hunter2@s1:26379,s2/mq", "redis+sentinel://:***@s1:26379,s2/mq"),
        ("memcached://u:hunter2@h1:11211,h2:11211", "memcached://u:***@h1:11211,h2:11211"),
        ("unix://:hunter2@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("rediss://:hunter2@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
        # Secrets in the query.
        (
            "sqlite:////var/q.db?password=hunter2&timeout=5",
            "sqlite:////var/q.db?password=***&timeout=5",
        ),
        (
            "smtp://h:587?username=me@x.com&password=hunter2",
            "smtp://h:587?username=me@x.com&password=***",
        ),
        ("http://h/?api_key=hunter2&sig=1", "http://h/?api_key=***&sig=1"),
        # Nothing to hide: left exactly as it is.
        ("redis://user@host/0", "redis://user@host/0"),
        ("redis://user:@host", "redis://user:@host"),
        ("redis://:***@host", "redis://:***@host"),
        ("redis://:********************@host", "redis://:********************@host"),
        ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),
        ("sqlite:///rel/q.db?password=", "sqlite:///rel/q.db?password="),
        ("smtp", "smtp"),
        (
            "django:anymail.backends.mailgun.EmailBackend",
            "django:anymail.backends.mailgun.EmailBackend",
        ),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown
    assert "hun" not in shown
    assert redact(shown) == shown


def test_a_doubtful_url_loses_more_than_its_password_never_less():
    # "@" in a query after a host:port: read as a password holding "/" and "?".
    assert redact("redis://host:6379/0?client_name=a@b") == "redis://host:***@b"


def test_redact_finds_every_url_in_a_message():
    text = (
        "cannot reach 'redis://:hunter2@h1/0' nor ['smtp://u:hunter2@h2', "
        "'memcached://u:hunter2@h3'] (x=redis://:hunter2@a,redis://:hunter2@b)"
    )
    assert SECRET not in redact(text)
    assert redact(text).count("***") == 5


def test_redact_value_hides_urls_and_secret_keys():
    value = {
        "NAME": "redis://:hunter2@h/0",
        "OPTIONS": {"password": "hunter2", "client_options": {"PASSWORD": "hunter2"}, "db": 1},
        "LIST": ["smtp://u:hunter2@h"],
        "TUPLE": ("smtp://u:hunter2@h",),
    }
    shown = redact_value(value)
    assert SECRET not in repr(shown)
    assert shown["OPTIONS"]["db"] == 1 and isinstance(shown["TUPLE"], tuple)
    assert redact_value(5) == 5


def test_config_repr_hides_passwords():
    config = Config.from_settings(
        {
            "STORE": "redis://:hunter2@h/0",
            "TRANSPORT": {"NAME": "smtp://h", "OPTIONS": {"password": SECRET}},
            "FALLBACK_STORE": "sqlite:////tmp/f.db?password=hunter2",
        }
    )
    assert SECRET not in repr(config)
    assert "redis://:***@h/0" in repr(config) and repr(config).startswith("Config(")


@pytest.mark.parametrize(
    "spec",
    [
        "memcached://u:hunter2@h:11211",
        "nosuch://:hunter2@x",
        ["redis://:hunter2@h"],
        {"NAME": "memory://x", "OPTIONS": {"colour": "redis://:hunter2@h"}},
    ],
)
def test_plugin_errors_never_hold_a_password(spec):
    with pytest.raises(ConfigurationError) as info:
        plugins.make_store(spec, setting="MAILQUEUE['STORE']")
    assert SECRET not in printed(info.value)


def test_a_third_party_plugin_that_quotes_its_url_is_redacted(monkeypatch):
    class Quoting:
        def __init__(self, location, **options):
            raise ConfigurationError(f"cannot use {location}") from ValueError(location)

    monkeypatch.setattr(plugins, "load_plugin_class", lambda *a: Quoting)
    with pytest.raises(ConfigurationError) as info:
        plugins.make_store("thirdparty://u:hunter2@h")
    assert str(info.value) == "STORE: cannot use thirdparty://u:***@h"
    # The original is not chained: a traceback would print its message.
    assert info.value.__cause__ is None and SECRET not in printed(info.value)
    with pytest.raises(ConfigurationError) as info:
        plugins.make_transport("thirdparty://u:hunter2@h")
    assert SECRET not in printed(info.value)

    class Clean:
        def __init__(self, location, **options):
            raise TypeError("unexpected keyword argument 'colour'")

    monkeypatch.setattr(plugins, "load_plugin_class", lambda *a: Clean)
    with pytest.raises(ConfigurationError) as info:
        plugins.make_transport("clean://u:hunter2@h", setting="T")
    assert SECRET not in str(info.value) and "clean://u:***@h" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)  # nothing to hide: chained
    with pytest.raises(ConfigurationError, match="bad options for store 'clean'") as info:
        plugins.make_store("clean://u:hunter2@h")
    assert isinstance(info.value.__cause__, TypeError)


def check_output(**mailqueue) -> str:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(MAILQUEUE=mailqueue):
        try:
            call_command("check", "--deploy", stdout=out, stderr=err)
        except SystemCheckError as exc:
            return out.getvalue() + err.getvalue() + str(exc)
    return out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    "settings",
    [
        {"STORE": "memcached://u:hunter2@127.0.0.1:11211"},  # E002: no userinfo allowed
        {"STORE": "sqlite:////tmp/q.db?password=hunter2"},  # E002: unknown option
        {"STORE": "redis://:hun/ter2@127.0.0.1:1/0"},  # E002: the "/" broke the URL
        {"STORE": "redis://:hunter2@127.0.0.1:1/0"},  # W005: unreachable, W004
        {"STORE": "memory://", "FALLBACK_STORE": "memcached://:hunter2@h"},
        {"STORE": "memory://", "TRANSPORT": "smtp://u:hunter2@h:notaport"},  # E003
        {"STORE": "memory://", "TRANSPORTS": {"bulk": "smtp://u:hunter2@h?ssl=maybe"}},
        {"STORE": "memory://", "MAX_AGES": "redis://:hunter2@h"},  # E001
    ],
)
def test_manage_py_check_never_prints_a_store_password(settings):
    output = check_output(**settings)
    assert "mailqueue." in output  # it did report something
    assert "hun" not in output and "ter2" not in output
