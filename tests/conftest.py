"""Shared test set-up: Django settings for the tests, and the server fixtures."""

from __future__ import annotations

import os

import django
import pytest

pytest_plugins = [
    "tests.servers.redis",
    "tests.servers.memcached",
]


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()


@pytest.fixture(autouse=True)
def _fresh_stores():
    """Each test starts with no cached store objects (settings may differ)."""
    from mailqueue_core.django_settings import reset

    reset()
    yield
    reset()


@pytest.fixture
def smtp():
    """A fresh SMTP server on loopback that records what it receives."""
    from mailqueue_core.testing.smtpserver import FaultySMTPServer

    with FaultySMTPServer() as server:
        yield server


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port that nothing listens on (for "server is down" tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
