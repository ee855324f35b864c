"""Fixtures that start real Redis servers on free loopback ports, with mirakuru.

``redis_server``           session-wide, no persistence (``--save "" --appendonly no``)
``redis_server_factory``   builds servers in the test's tmp dir (``appendonly=True``
                           by default) that a test can kill and restart
``redis_cluster``          session-wide 3-node Redis Cluster, no replicas
``redis_sentinel``         session-wide Sentinel watching ``redis_server`` as ``mq``
``redis_tls_server``       session-wide server speaking only TLS, certificates by trustme

A missing ``redis-server`` (or ``redis-cli``, ``trustme``) fails the test loudly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from mirakuru import TCPExecutor

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
CLUSTER_CREATE_FLAGS = ("--cluster-replicas", "0", "--cluster-yes")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: install Redis (apt-get install redis-server)")


def _wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll a readiness check, bounded; fail loudly when it never passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """One redis-server process; ``port`` stays the same across restarts."""

    def __init__(self, directory: Path, *args: str, port: int | None = None, tls: bool = False):
        _require(REDIS_SERVER)
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.args = args
        directory.mkdir(parents=True, exist_ok=True)
        port_args = (
            ["--port", "0", "--tls-port", str(self.port)] if tls else ["--port", str(self.port)]
        )
        command = [REDIS_SERVER, *port_args, "--bind", HOST, "--dir", str(directory), *args]
        self.executor = TCPExecutor(command, host=HOST, port=self.port, timeout=READY_TIMEOUT)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        self.executor.start()
        if not self.tls:
            _wait_until(self._answers, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        self.executor.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to write anything more."""
        self.executor.stop(stop_signal=signal.SIGKILL)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client for the test's own look at the server (close it)."""
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def _answers(self) -> bool:
        with self.client(socket_timeout=1) as client:
            try:
                return bool(client.ping())
            except redis.exceptions.AuthenticationError:
                return True  # up, and asking for a password
            except redis.exceptions.ConnectionError:  # includes LOADING
                return False


class RedisCluster:
    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), "--save", "", "--appendonly", "no")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    made: list[RedisServer] = []

    def make(*extra: str, appendonly: bool = True) -> RedisServer:
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if appendonly else []
        server = RedisServer(tmp_path / f"redis-{len(made)}", "--save", "", *aof, *extra)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    _require(REDIS_CLI)
    base = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    for i in range(3):
        bus = free_port()
        args = ["--cluster-enabled", "yes", "--cluster-port", str(bus)]
        args += ["--cluster-config-file", str(base / f"node{i}" / "nodes.conf")]
        nodes.append(RedisServer(base / f"node{i}", "--save", "", "--appendonly", "no", *args))
    cluster = RedisCluster(nodes)
    try:
        for node in nodes:
            node.start()
        addresses = [f"{HOST}:{n.port}" for n in nodes]
        done = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, *CLUSTER_CREATE_FLAGS],
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        for node in nodes:
            _wait_until(lambda node=node: _cluster_ok(node), f"cluster node {node.port}")
        yield cluster
    finally:
        for node in nodes:
            node.stop()


def _cluster_ok(node: RedisServer) -> bool:
    with node.client() as client:
        return client.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0


@pytest.fixture(scope="session")
def redis_sentinel(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int, str]]:
    """``(host, port, service_name)`` of a Sentinel whose master is ``redis_server``."""
    _require(REDIS_SERVER)
    directory = tmp_path_factory.mktemp("redis-sentinel")
    port = free_port()
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind {HOST}\ndir {directory}\n"
        f"sentinel monitor mq {HOST} {redis_server.port} 1\n"
    )
    executor = TCPExecutor(
        [REDIS_SERVER, str(conf), "--sentinel"], host=HOST, port=port, timeout=READY_TIMEOUT
    )
    executor.start()
    yield HOST, port, "mq"
    executor.stop()


@pytest.fixture(scope="session")
def redis_tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, Path]]:
    """A TLS-only server and the path of the CA file that signed its certificate."""
    try:
        import trustme
    except ImportError:
        pytest.fail("the TLS tests need trustme: pip install trustme")
    directory = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_args = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]
    tls_args += ["--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no"]
    server = RedisServer(directory, "--save", "", "--appendonly", "no", *tls_args, tls=True)
    server.start()
    yield server, ca_file
    server.stop()
