"""``manage.py check`` opens each store and reports what stops it, with the fix as the hint.

A store on this machine (``Capability.LOCAL``: a SQLite file) is checked at every
start, for about 0.3 ms; a network store (Redis) under ``check --deploy`` only,
since a server that does not answer costs its whole connect timeout (5 s for
Redis) at every ``runserver`` reload. Nothing is created by a check.
"""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.store import Capability
from tests.helpers import legacy_email_settings
from tests.test_configuration import SharedMemory, ids, install_stores


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


class LocalUnreachable(SharedMemory):
    """A store on this machine that cannot open its files."""

    capabilities = SharedMemory.capabilities | {Capability.LOCAL}

    def verify(self) -> None:
        raise StoreUnavailable("cannot open /srv/queue: Input/output error")


@pytest.fixture
def verify_plugins(tmp_path, monkeypatch):
    """The stores above, registered through entry points as a third party's would be."""
    install_stores(
        tmp_path,
        monkeypatch,
        unkept=UnkeptPromises,
        unreachable=Unreachable,
        unhinted=UnhintedPromises,
        local=LocalUnreachable,
    )


def default_checks() -> list:
    return run_checks(tags=["mailqueue"])


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
    assert "run 'manage.py check --deploy' where the site runs" in warning.hint


def test_store_check_leaves_bad_settings_to_the_other_checks(tmp_path):
    with override_settings(MAILQUEUE={"STORE": "nosuch://"}):
        assert ids(deploy_checks()) == ["mailqueue.E002"]
    with override_settings(MAILQUEUE={"STORE": "memory://", "BOGUS": 1}):
        assert ids(deploy_checks()) == ["mailqueue.E001"]
    with override_settings(MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/queue.db"}):
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


# -- at every start: the stores on this machine -----------------------------------------


def test_a_sqlite_queue_in_a_missing_directory_is_an_error_at_every_start(tmp_path):
    with override_settings(MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/spool/queue.db"}):
        (error,) = default_checks()
        assert ids(deploy_checks()) == ["mailqueue.E004"]  # once, not once per check
    assert error.id == "mailqueue.E004" and isinstance(error, Error)
    assert error.msg.startswith(
        f"MAILQUEUE['STORE']: sqlite store: the directory {tmp_path}/spool"
    )
    assert error.hint.startswith(f"mkdir -p {tmp_path}/spool && chown ")
    assert not (tmp_path / "spool").exists()  # a check creates nothing


def test_a_fallback_store_is_checked_too(tmp_path):
    fallback = f"sqlite:///{tmp_path}/gone/fallback.db"
    with override_settings(MAILQUEUE={"STORE": "memory://", "FALLBACK_STORE": fallback}):
        (error,) = [m for m in default_checks() if m.id == "mailqueue.E004"]
    assert error.msg.startswith("MAILQUEUE['FALLBACK_STORE']: sqlite store: the directory")


def test_a_usable_sqlite_queue_passes_and_nothing_is_created(tmp_path):
    with override_settings(MAILQUEUE={"STORE": f"sqlite:///{tmp_path}/queue.db"}):
        assert default_checks() == []
    assert list(tmp_path.iterdir()) == []


def test_a_local_store_that_cannot_be_opened_warns_at_every_start(verify_plugins):
    with override_settings(MAILQUEUE={"STORE": "local://q"}):
        (warning,) = default_checks()
    assert warning.id == "mailqueue.W005" and isinstance(warning, Warning)
    assert warning.msg == "MAILQUEUE['STORE'] cannot be reached: cannot open /srv/queue: " + (
        "Input/output error"
    )
    assert "Mail sent now would fail" in warning.hint


# -- under --deploy: the network stores --------------------------------------------------


def test_a_network_store_is_asked_under_deploy_only(unused_tcp_port):
    with override_settings(MAILQUEUE={"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0"}):
        assert default_checks() == []
        (warning,) = deploy_checks()
    assert warning.id == "mailqueue.W005"
    assert warning.msg.startswith("MAILQUEUE['STORE'] cannot be reached: redis store")
    assert "Check that the server runs at the URL's host and port" in warning.hint


def test_a_wrong_redis_password_is_reported_under_deploy(redis_server_factory):
    server = redis_server_factory(appendonly=False)
    server.client().config_set("requirepass", "right-one")  # a restart would take seconds
    wrong = server.url.replace("redis://", "redis://:wrong-one@")
    with override_settings(MAILQUEUE={"STORE": wrong}):
        (warning,) = [m for m in deploy_checks() if m.id != "mailqueue.W004"]
    assert warning.id == "mailqueue.W005"
    assert "invalid username-password pair" in warning.msg
    assert "the password is right" in warning.hint
    assert "wrong-one" not in warning.msg + warning.hint
