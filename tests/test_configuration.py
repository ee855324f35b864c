"""Bad settings are errors that name the key; plugins are found through entry points."""

from __future__ import annotations

import pytest
import stevedore
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings

from mailqueue_core import plugins
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError, StoreUnavailable
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


def test_checks_report_bad_settings():
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E001"]
    with override_settings(MAILQUEUE={"STORE": "nosuch://"}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E002"]
    with override_settings(MAILQUEUE={"STORE": "sqlite:////tmp/x.db", "TRANSPORT": "pigeon"}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.E003"]
    with override_settings(MAILQUEUE={"STORE": "memory://"}):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.W001"]


class DurableButPrivate(MemoryStore):
    capabilities = frozenset({Capability.DURABLE})


class Forgetful(MemoryStore):
    capabilities = frozenset({Capability.SHARED, Capability.MAY_LOSE})


class SilentlyForgetful(MemoryStore):
    capabilities = frozenset({Capability.SHARED})


@pytest.fixture
def capability_plugins(tmp_path, monkeypatch):
    """Third-party stores told apart only by what they declare."""
    dist = tmp_path / "mq_capability_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mq-cap-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mailqueue.stores]\n"
        f"private = {__name__}:DurableButPrivate\n"
        f"forgetful = {__name__}:Forgetful\n"
        f"silent = {__name__}:SilentlyForgetful\n"
        f"shared = {__name__}:SharedMemory\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})


def test_store_warnings_follow_capabilities_not_names(capability_plugins):
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
        MAILQUEUE={"STORE": "sqlite:////tmp/x.db", "MAX_AGE": 30, "RETRY": {"FIRST": 60}}
    ):
        assert ids(run_checks(tags=["mailqueue"])) == ["mailqueue.W002"]
    with override_settings(
        MAILQUEUE={
            "STORE": "sqlite:////tmp/x.db",
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
    assert error.id == "mailqueue.E002" and "names no file" in error.msg


# -- the store check: Store.verify() under manage.py check --deploy ---------------------


class SharedMemory(MemoryStore):
    """Declares what a shared, durable store would, so only verify() is judged."""

    capabilities = frozenset({Capability.SHARED, Capability.DURABLE})


class UnkeptPromises(SharedMemory):
    """A store whose server is set up so that it would lose mail."""

    def verify(self) -> None:
        raise ConfigurationError(
            "the server forgets records under memory pressure. Fix: turn that off."
        )


class Unreachable(SharedMemory):
    def verify(self) -> None:
        raise StoreUnavailable("cannot reach redis://:hunter2@10.0.0.1/0: timed out")


class UnhintedPromises(SharedMemory):
    def verify(self) -> None:
        raise ConfigurationError("the server is set up wrong")


@pytest.fixture
def verify_plugins(tmp_path, monkeypatch):
    """The stores above, registered through entry points as a third party's would be."""
    dist = tmp_path / "mq_check_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mq-check-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mailqueue.stores]\n"
        f"unkept = {__name__}:UnkeptPromises\n"
        f"unreachable = {__name__}:Unreachable\n"
        f"unhinted = {__name__}:UnhintedPromises\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # stevedore reads each namespace's entry points once per process; read them again.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})


def deploy_checks() -> list:
    return run_checks(tags=["mailqueue"], include_deployment_checks=True)


def test_store_check_turns_a_configuration_error_into_an_error_with_its_fix(verify_plugins):
    with override_settings(MAILQUEUE={"STORE": "unkept://q"}):
        assert run_checks(tags=["mailqueue"]) == []  # not at every runserver
        (error,) = deploy_checks()
    assert error.id == "mailqueue.E004" and isinstance(error, Error)
    assert error.msg == "MAILQUEUE['STORE']: the server forgets records under memory pressure."
    assert error.hint == "turn that off."
    with override_settings(MAILQUEUE={"STORE": "memory://", "FALLBACK_STORE": "unhinted://f"}):
        (error,) = [m for m in deploy_checks() if m.id == "mailqueue.E004"]
    assert error.msg == "MAILQUEUE['FALLBACK_STORE']: the server is set up wrong"
    assert "cannot keep the queue's promises" in error.hint


def test_store_check_warns_when_the_store_cannot_be_reached(verify_plugins):
    with override_settings(MAILQUEUE={"STORE": "unreachable://q"}):
        (warning,) = deploy_checks()
    assert warning.id == "mailqueue.W005" and isinstance(warning, Warning)
    assert "MAILQUEUE['STORE'] cannot be reached" in warning.msg
    assert "hunter2" not in warning.msg and "redis://:***@10.0.0.1/0" in warning.msg
    assert "--deploy" in warning.hint


def test_store_check_leaves_bad_settings_to_the_other_checks():
    with override_settings(MAILQUEUE={"STORE": "nosuch://"}):
        assert ids(deploy_checks()) == ["mailqueue.E002"]
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        assert ids(deploy_checks()) == ["mailqueue.E001"]
    with override_settings(MAILQUEUE={"STORE": "sqlite:////tmp/x.db"}):
        assert deploy_checks() == []  # the default verify() checks nothing
    with legacy_email_settings(
        MAILQUEUE=None, EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend"
    ):
        assert deploy_checks() == []


def test_store_check_refuses_a_real_redis_that_evicts(redis_server_factory):
    server = redis_server_factory("--maxmemory-policy", "allkeys-lru", appendonly=False)
    with override_settings(MAILQUEUE={"STORE": server.url}):
        assert run_checks(tags=["mailqueue"]) == []
        (error,) = deploy_checks()
    assert error.id == "mailqueue.E004"
    assert "allkeys-lru" in error.msg and "noeviction" in error.hint
    with override_settings(MAILQUEUE={"STORE": f"{server.url}?allow_eviction=true"}):
        assert deploy_checks() == []  # the operator accepted the risk, by name
    server.client().config_set("maxmemory-policy", "noeviction")
    with override_settings(MAILQUEUE={"STORE": server.url}):
        assert deploy_checks() == []


def test_store_check_warns_for_a_real_redis_that_is_down(unused_tcp_port):
    with override_settings(MAILQUEUE={"STORE": f"redis://:hunter2@127.0.0.1:{unused_tcp_port}/0"}):
        messages = deploy_checks()
    assert ids(messages) == ["mailqueue.W004", "mailqueue.W005"]
    assert all("hunter2" not in m.msg + (m.hint or "") for m in messages)
