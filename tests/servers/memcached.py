"""Fixtures that start real memcached servers on free loopback ports, with mirakuru.

``memcached_server``           session-wide server (``-U 0``: TCP only), default limits
``memcached_pair``             session-wide pair of servers, for stores spread over two
``memcached_server_factory``   servers a test starts with its own flags (``-m 2 -I 512k``
                               for evictions) and may restart on the same port
``no_wall_clock``              fails the test when the memcached store reads the wall
                               clock (its time comes from the caller)

:data:`FAR_CLOCK` is the ``now`` the store's tests run on: far from the wall clock, so
that a store mixing in a clock of its own could not pass them.

:func:`raw_item` finds the server holding one of a store's items and hands a plain
pymemcache client on it, for tests that damage records as an operator would.

A missing ``memcached`` binary fails the test loudly.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from mirakuru import TCPExecutor
from pymemcache.client.base import Client

MEMCACHED = "/usr/bin/memcached"
#: 2100-01-01 00:00 UTC, on a bucket boundary.
FAR_CLOCK = 4_102_444_800.0
STORE_PACKAGE = "mailqueue_stores.memcached"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    """memcached accepts connections before it is ready for commands: ask it."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION")
    except OSError:
        return False


class MemcachedServer:
    """One memcached process; ``port`` stays the same across restarts."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        if not os.access(MEMCACHED, os.X_OK):
            pytest.fail(f"{MEMCACHED} is missing: install memcached (apt-get install memcached)")
        self.port = port or free_port()
        # memcached refuses to run as root unless told which user to be.
        user = ["-u", "root"] if os.geteuid() == 0 else []
        command = [MEMCACHED, *user, "-l", HOST, "-p", str(self.port), "-U", "0", *args]
        self.executor = TCPExecutor(command, host=HOST, port=self.port, timeout=READY_TIMEOUT)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"memcached://{self.address}"

    def start(self) -> MemcachedServer:
        self.executor.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(self.port):
            if time.monotonic() > deadline:
                pytest.fail(f"memcached on port {self.port} never answered")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.executor.stop()

    def restart(self) -> None:
        """Stop and start again on the same port: memcached comes back empty."""
        self.stop()
        self.start()


def raw_item(location: str, key: str) -> tuple[Client, bytes]:
    """A plain client on the server of ``location`` that holds ``key``, and its value.

    The caller closes the client. Fails the test when no server holds the key.
    """
    from mailqueue_stores.memcached.options import read

    for host, port in read(location, {}).servers:
        client = Client((host, port), default_noreply=False)
        value = client.get(key)
        if value is not None:
            return client, value
        client.close()
    pytest.fail(f"no server of {location} holds {key}")


@pytest.fixture
def no_wall_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test when a module of the store package calls ``time.time``.

    Yields the list of modules caught so far (for a test of this fixture).
    """
    readers: list[str] = []
    for name in ("time", "time_ns"):
        real = getattr(time, name)

        def spy(real: Callable[[], float] = real) -> float:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller == STORE_PACKAGE or caller.startswith(STORE_PACKAGE + "."):
                readers.append(caller)
            return real()

        monkeypatch.setattr(time, name, spy)
    yield readers
    monkeypatch.undo()
    assert not readers, f"the memcached store read the wall clock in {sorted(set(readers))}"


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached_pair() -> Iterator[tuple[MemcachedServer, MemcachedServer]]:
    pair = (MemcachedServer().start(), MemcachedServer().start())
    yield pair
    for server in pair:
        server.stop()


@pytest.fixture
def memcached_server_factory() -> Iterator[Callable[..., MemcachedServer]]:
    started: list[MemcachedServer] = []

    def make(*args: str) -> MemcachedServer:
        server = MemcachedServer(*args).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
