"""No code execution from a store's contents, and no credentials in logs, errors or output."""

from __future__ import annotations

import logging
import pathlib
import re

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from tests.test_commands import manage

PACKAGES = ["mailqueue_core", "mailqueue_stores", "mailqueue_transports"]
SECRET = "hunter2-top-secret"


def test_nothing_in_the_packages_can_deserialize_code():
    root = pathlib.Path(__file__).resolve().parent.parent
    forbidden = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|marshal|shelve|jsonpickle)\b"
        r"|\byaml\.load\(|\beval\(|\bexec\(",
        re.MULTILINE,
    )
    offenders = [
        str(path.relative_to(root))
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
        if forbidden.search(path.read_text())
    ]
    assert offenders == []


def test_store_password_never_shown(caplog, unused_tcp_port, capsys):
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{SECRET}@127.0.0.1:{unused_tcp_port}/0"
    with override_settings(MAILQUEUE={"STORE": url}):
        for sub in ("status", "dead", "flush"):
            code, out, err = manage(sub)
            assert code in (1, 2)
            assert SECRET not in out + err
        try:
            EmailBackend().send_messages([EmailMessage("S", "B", "a@x.com", ["r@x.com"])])
        except Exception as exc:  # any error text must be clean
            assert SECRET not in repr(exc) and SECRET not in str(exc.__cause__)
    captured = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged + captured.out + captured.err


@pytest.mark.parametrize(
    "url",
    [
        f"memcached://u:{SECRET}@127.0.0.1:1",
        f"memcached://127.0.0.1:1?password={SECRET}",
        f"sqlite:////tmp/mq-secret.db?password={SECRET}",
        f"redis://:{SECRET[:4]}/{SECRET[4:]}@127.0.0.1:1/0",  # a "/" the URL cannot hold
    ],
)
def test_no_store_url_form_shows_its_password(url):
    with override_settings(MAILQUEUE={"STORE": url}):
        for sub in ("status", "dead", "flush"):
            code, out, err = manage(sub)
            assert code in (1, 2)
            assert SECRET[:4] not in out + err and SECRET[4:] not in out + err


def test_bad_setting_errors_do_not_echo_passwords():
    with override_settings(
        MAILQUEUE={"STORE": "memory://", "TRANSPORT": f"smtp://u:{SECRET}@host:notaport"}
    ):
        code, _, err = manage("flush")
    assert code == 1 and SECRET not in err and "***" in err
