"""Bad settings are errors that name the key; plugins are found through entry points."""

from __future__ import annotations

import pytest
import stevedore
from django.core.checks import run_checks
from django.test import override_settings

from mailqueue_core import plugins
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import parse_bool, parse_url, plugin_name, redact
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.store import Capability
from mailqueue_stores.memory import MemoryStore
from mailqueue_transports.django import DjangoTransport
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import legacy_email_settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (None, "MAILQUEUE is not set"),
        ("redis://", "must be a dict"),
        ({}, "STORE'\\] is required"),
        ({"STORE": "memory://", "MAXAGE": 5}, "unknown key\\(s\\): MAXAGE"),
        ({"STORE": "memory://", "MAX_AGE": "1d"}, "MAX_AGE'\\] must be a positive number"),
        ({"STORE": "memory://", "MAX_AGE": True}, "MAX_AGE"),
        ({"STORE": "memory://", "BATCH_SIZE": 1.5}, "BATCH_SIZE'\\] must be a positive integer"),
        ({"STORE": "memory://", "LEASE": 0}, "LEASE"),
        ({"STORE": "memory://", "NAMESPACE": ""}, "NAMESPACE"),
        ({"STORE": "memory://", "RETRY": 5}, "RETRY'\\] must be a dict"),
        ({"STORE": "memory://", "RETRY": {"FRIST": 1}}, "RETRY'\\] has unknown key\\(s\\): FRIST"),
        ({"STORE": "memory://", "RETRY": {"JITTER": 2}}, "jitter"),
        ({"STORE": "memory://", "RETRY": {"FACTOR": 0.5}}, "factor"),
        ({"STORE": "memory://", "RETRY": {"FIRST": -1}}, "first"),
        ({"STORE": "memory://", "TRANSPORT": ""}, "TRANSPORT"),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ConfigurationError, match=message):
        Config.from_settings(settings)


def test_defaults():
    conf = Config.from_settings({"STORE": "memory://"})
    assert conf.policy == RetryPolicy(first=60, factor=2, max=3600, jitter=0.1, max_age=86400)
    assert (conf.batch_size, conf.lease, conf.namespace) == (100, 300.0, "default")


def test_policy_delay_and_jitter_bounds():
    policy = RetryPolicy(first=60, factor=2, max=3600, jitter=0.1, random=lambda: 1.0)
    assert policy.delay(1) == pytest.approx(66)
    assert RetryPolicy(jitter=0.1, random=lambda: 0.0).delay(20) == pytest.approx(3240)


def test_unknown_store_lists_installed_and_suggests():
    with pytest.raises(ConfigurationError) as info:
        plugins.make_store("sqlit:///x.db", setting="MAILQUEUE['STORE']")
    text = str(info.value)
    assert "no store named 'sqlit'" in text
    assert "memory" in text and "sqlite" in text and "redis" in text
    assert "Did you mean 'sqlite'?" in text


def test_unknown_transport_lists_installed():
    with pytest.raises(ConfigurationError, match="Installed: django, smtp"):
        plugins.make_transport("carrier-pigeon")


def test_store_by_name_url_and_dict():
    assert isinstance(plugins.make_store("memory"), MemoryStore)
    store = plugins.make_store({"NAME": "memory://x", "OPTIONS": {"namespace": "n"}})
    assert store.namespace == "n"
    assert plugins.make_store("memory://x", namespace="site").namespace == "site"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"NAME": "memory", "OPTION": {}}, "unknown key"),
        ({"OPTIONS": {}}, "NAME is required"),
        ({"NAME": "memory", "OPTIONS": 3}, "must be a dict"),
        (42, "must be a name, a URL or a dict"),
        ({"NAME": "memory", "OPTIONS": {"colour": "red"}}, "memory store: unknown option"),
        ({"NAME": "memory", "OPTIONS": {"namespace": 5}}, "namespace"),
    ],
)
def test_bad_store_specs(spec, message):
    with pytest.raises(ConfigurationError, match=message):
        plugins.make_store(spec)


def test_broken_plugin_is_an_error_not_a_missing_one(monkeypatch):
    import importlib.metadata

    broken = importlib.metadata.EntryPoint("broken", "no_such_module_xyz:Store", plugins.STORES)
    monkeypatch.setattr(
        plugins,
        "DriverManager",
        lambda namespace, name, **kw: kw["on_load_failure_callback"](
            None, broken, ImportError("No module named 'no_such_module_xyz'")
        ),
    )
    with pytest.raises(ConfigurationError, match="failed to load: ImportError"):
        plugins.make_store("broken://")


def test_plugin_that_is_not_a_store(monkeypatch):
    monkeypatch.setattr(plugins, "load_plugin_class", lambda *a: lambda loc, **kw: object())
    with pytest.raises(ConfigurationError, match="is not a mailqueue Store"):
        plugins.make_store("memory://")
    with pytest.raises(ConfigurationError, match="is not a mailqueue Transport"):
        plugins.make_transport("smtp")


def test_urls():
    assert plugin_name("redis+sentinel://h:1/svc") == "redis"
    assert plugin_name("django:anymail.backends.test.EmailBackend") == "django"
    assert plugin_name("smtp") is None
    url = parse_url("smtp://us%40er:p%2Fw@mail.example.com:587?starttls=true", schemes=("smtp",))
    assert (url.username, url.password, url.host, url.port) == (
        "us@er",
        "p/w",
        "mail.example.com",
        587,
    )
    assert url.options() == {"starttls": "true"}
    with pytest.raises(ConfigurationError, match="expected smtp"):
        parse_url("http://x", schemes=("smtp",))
    with pytest.raises(ConfigurationError, match="cannot parse"):
        parse_url("smtp://:secret@x:notaport", schemes=("smtp",))
    assert redact("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("smtp://user:secret@host") == "smtp://user:***@host"
    assert parse_bool("Yes", "x") is True and parse_bool("off", "x") is False
    with pytest.raises(ConfigurationError, match="true or false"):
        parse_bool("maybe", "starttls")


def test_smtp_options_from_url_settings_and_errors():
    with legacy_email_settings(
        EMAIL_HOST="relay.example.com", EMAIL_PORT=2525, EMAIL_USE_TLS=True
    ):
        t = SMTPTransport("smtp")
        assert (t.host, t.port, t.use_tls, t.timeout) == ("relay.example.com", 2525, True, 30.0)
        t = SMTPTransport("smtp://u:p@other:465?ssl=true&starttls=false&timeout=3")
        assert (t.host, t.port, t.use_ssl, t.use_tls, t.timeout) == ("other", 465, True, False, 3)
        assert "p" not in t.describe().replace("smtp", "")
    with pytest.raises(ConfigurationError, match="smtp transport: unknown option 'colour'"):
        SMTPTransport("smtp", colour="red")
    with pytest.raises(ConfigurationError, match=r"'strattls' in the URL \(did you mean"):
        SMTPTransport("smtp://relay?strattls=true")
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        SMTPTransport("smtp", starttls=True, ssl=True)
    with pytest.raises(ConfigurationError, match=r"'port' .* must be a number"):
        SMTPTransport("smtp", port="x")
    with pytest.raises(ConfigurationError, match=r"'port' .* 1 to 65535"):
        SMTPTransport("smtp", port=70000)
    with pytest.raises(ConfigurationError, match=r"'timeout' .* seconds >= 0"):
        SMTPTransport("smtp", timeout=-1)


def test_django_transport_refuses_to_wrap_the_queue():
    with pytest.raises(ConfigurationError, match="cannot wrap the queueing backend"):
        DjangoTransport("django:mailqueue_core.backend.EmailBackend")
    with pytest.raises(ConfigurationError, match="exactly one of BACKEND"):
        DjangoTransport("")
    with pytest.raises(ConfigurationError, match="cannot import"):
        DjangoTransport("django:no.such.Backend")
    with override_settings(MAILERS={"queue": {"BACKEND": "mailqueue_core.backend.EmailBackend"}}):
        with pytest.raises(ConfigurationError, match="cannot wrap"):
            DjangoTransport("", MAILER="queue")
        with pytest.raises(ConfigurationError, match=r"not in settings\.MAILERS"):
            DjangoTransport("", MAILER="other")


def ids(messages):
    return sorted(m.id for m in messages)


def test_checks_report_bad_settings(tmp_path):
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E001"]
    with override_settings(MAILQUEUE={"STORE": "nosuch://"}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E002"]
    with override_settings(
        MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/queue.db", "TRANSPORT": "pigeon"}
    ):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E003"]
    with override_settings(MAILQUEUE={"STORE": "memory://"}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.W001"]


class DurableButPrivate(MemoryStore):
    capabilities = frozenset({Capability.DURABLE})


class Forgetful(MemoryStore):
    capabilities = frozenset({Capability.SHARED, Capability.MAY_LOSE})


class SilentlyForgetful(MemoryStore):
    capabilities = frozenset({Capability.SHARED})


def install_stores(tmp_path, monkeypatch, **stores: type) -> None:
    """Register ``stores`` (entry-point name -> class) as a third party's package would."""
    dist = tmp_path / "mq_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mq-test-plugins\nVersion: 1.0\n")
    lines = [f"{name} = {cls.__module__}:{cls.__qualname__}\n" for name, cls in stores.items()]
    (dist / "entry_points.txt").write_text("[mailqueue.stores]\n" + "".join(lines))
    monkeypatch.syspath_prepend(str(tmp_path))
    # stevedore reads each namespace's entry points once per process; read them again.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})


@pytest.fixture
def capability_plugins(tmp_path, monkeypatch):
    """Third-party stores told apart only by what they declare."""
    install_stores(
        tmp_path,
        monkeypatch,
        private=DurableButPrivate,
        forgetful=Forgetful,
        silent=SilentlyForgetful,
        shared=SharedMemory,
    )


def test_store_warnings_follow_capabilities_not_names(capability_plugins, tmp_path):
    def only(store):
        with override_settings(MAILQUEUE={"STORE": store}):
            (message,) = run_checks(tags=["mailqueue"])
        return message

    private = only("private://x")
    assert private.id == "mailqueue.W001" and "DurableButPrivate" in private.msg
    assert "lost when the process exits" not in private.msg
    assert "lost when the process exits" in only("memory://").msg
    forgetful = only("forgetful://x")
    assert forgetful.id == "mailqueue.W006" and "each loss is reported" in forgetful.msg
    assert "losses are not reported" in only("silent://x").msg
    with override_settings(MAILQUEUE={"STORE": "shared://x"}):
        assert run_checks(tags=["mailqueue"]) == []
    with override_settings(
        MAILQUEUE={
            "STORE": f"sqlite:///{tmp_path}/queue.db",
            "MAX_AGE": 30,
            "RETRY": {"FIRST": 60},
        }
    ):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.W002"]
    with override_settings(
        MAILQUEUE={
            "STORE": f"sqlite:///{tmp_path}/queue.db",
            "TRANSPORT": "django:mailqueue_core.backend.EmailBackend",
        }
    ):
        (error,) = run_checks(tags=["mailqueue"])
        assert error.id == "mailqueue.E003" and "cannot wrap" in error.msg
    with legacy_email_settings(
        MAILQUEUE=None, EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend"
    ):
        assert run_checks(tags=["mailqueue"]) == []
    with override_settings(MAILQUEUE=None):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E001"]


def test_check_reports_an_unparseable_store_url():
    with override_settings(MAILQUEUE={"STORE": "sqlite://no-path"}):
        (error,) = run_checks(tags=["mailqueue"])
    assert error.id == "mailqueue.E002" and "write sqlite:////no-path" in error.msg


class SharedMemory(MemoryStore):
    """Declares what a shared, durable store would, so only verify() is judged."""

    capabilities = frozenset({Capability.SHARED, Capability.DURABLE})


# -- errors that name the fix -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message", "hint"),
    [
        (
            {"STORE": "memory://", "MAX_AGES": 5},
            "MAILQUEUE has unknown key(s): MAX_AGES (did you mean 'MAX_AGE'?). Known keys: "
            "STORE, TRANSPORT, TRANSPORTS, NAMESPACE, MAX_AGE,",
            "Every key and what it takes",
        ),
        (
            {"STORE": "memory://", "LEASE": "5m"},
            "MAILQUEUE['LEASE'] must be a positive number of seconds, got '5m'",
            "MAILQUEUE['LEASE'] takes a positive number of seconds. Default: 300.",
        ),
        (
            {"STORE": "memory://", "RETRY": {"jitter": 0.2}},
            "MAILQUEUE['RETRY'] has unknown key(s): jitter (did you mean 'JITTER'?)",
            "MAILQUEUE['RETRY'] takes a dict with any of FIRST (seconds > 0), FACTOR (>= 1)",
        ),
        (
            {"STORE": "memory://", "RETRY": {"JITTER": 2}},
            "MAILQUEUE['RETRY']['JITTER']: retry jitter must be a fraction in [0, 1), got 2",
            "JITTER (a fraction, 0 <= JITTER < 1). Default: {'FIRST': 60,",
        ),
        (
            {"STORE": "memory://", "RATE_LIMIT": {"MESAGES": "5/s"}},
            "MAILQUEUE['RATE_LIMIT'] has unknown key(s): MESAGES (did you mean 'MESSAGES'?)",
            "MAILQUEUE['RATE_LIMIT'] takes None, or a dict with any of MESSAGES",
        ),
        (
            {"STORE": ""},
            "MAILQUEUE['STORE'] is required: a store's name, its URL, or",
            "Default: none, it is required.",
        ),
        (
            {"STORE": "memory://", "ON_COMMIT": 1},
            "MAILQUEUE['ON_COMMIT'] must be False, True, or a database alias (a string), got 1",
            "Default: False.",
        ),
    ],
)
def test_e001_says_which_key_and_what_it_takes(settings, message, hint):
    with override_settings(MAILQUEUE=settings):
        (error,) = run_checks(tags=["mailqueue"])
    assert error.id == "mailqueue.E001"
    assert message in error.msg
    assert hint in error.hint


def test_a_store_spec_key_gets_a_did_you_mean():
    with pytest.raises(ConfigurationError, match=r"Options \(did you mean 'OPTIONS'\?\)"):
        plugins.make_store({"NAME": "memory://", "Options": {}}, setting="MAILQUEUE['STORE']")


@pytest.mark.parametrize(
    "spec",
    [
        "memory://q?colour=red",
        "sqlite:////tmp/q.db?colour=red",
        "redis://localhost/0?colour=red",
        "memcached://localhost:11211?colour=red",
        {"NAME": "redis://localhost/0", "OPTIONS": {"colour": "red"}},
    ],
)
def test_every_unknown_store_option_lists_the_valid_ones(spec):
    with pytest.raises(ConfigurationError, match="unknown option 'colour'") as info:
        plugins.make_store(spec, setting="MAILQUEUE['STORE']")
    assert "valid options: " in str(info.value) and "namespace" in str(info.value)


def test_every_unknown_transport_option_lists_the_valid_ones():
    with pytest.raises(ConfigurationError, match=r"valid options: .*starttls"):
        plugins.make_transport("smtp://relay:25?colour=red")


def test_a_misspelt_plugin_name_is_said_once_by_us(caplog):
    with pytest.raises(ConfigurationError, match="Did you mean 'smtp'"):
        plugins.make_transport("smpt://relay:25")
    assert [r.getMessage() for r in caplog.records] == []  # stevedore's "Could not load" is not
    plugins.make_transport("smtp://relay:25")
