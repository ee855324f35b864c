"""Fixtures that start real Redis servers on free loopback ports, with mirakuru.

``redis_server``           session-wide, no persistence (``--save "" --appendonly no``)
``redis_server_factory``   builds servers in the test's tmp dir (``appendonly=True``
                           by default) that a test can kill and restart
``redis_cluster``          session-wide 3-node Redis Cluster, no replicas
``redis_sentinel``         session-wide Sentinel watching ``redis_server`` as ``mq``
``redis_tls_server``       session-wide server speaking only TLS, certificates by trustme
``redis_replicated``       builds a master with replicas and a Sentinel of its own, in the
                           test's tmp dir, for failover drills (servers can be paused)

A missing ``redis-server`` (or ``redis-cli``, ``trustme``) fails the test loudly.
"""

from __future__ import annotations

import contextlib
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


def wait_until(check: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll a readiness check, bounded; fail loudly when it never passes."""
    deadline = time.monotonic() + timeout
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
            wait_until(self._answers, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        self.executor.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to write anything more."""
        self.executor.stop(stop_signal=signal.SIGKILL)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client for the test's own look at the server (close it)."""
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def info(self, section: str) -> dict[str, Any]:
        with self.client(socket_timeout=5) as client:
            return client.info(section)

    @property
    def pid(self) -> int:
        assert self.executor.process is not None, "the server is not running"
        return self.executor.process.pid

    def pause(self) -> None:
        """A stall: SIGSTOP, as a machine swapping to death or a VM paused would."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def _answers(self) -> bool:
        with self.client(socket_timeout=1) as client:
            try:
                return bool(client.ping())
            except redis.exceptions.AuthenticationError:
                return True  # up, and asking for a password
            except redis.exceptions.MasterDownError:
                return True  # up, a replica that serves nothing until it has synced
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
            wait_until(lambda node=node: _cluster_ok(node), f"cluster node {node.port}")
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


def wait_for_replicas(master: RedisServer, count: int) -> None:
    """Until ``count`` replicas are online and have everything the master wrote."""

    def caught_up() -> bool:
        info = master.info("replication")
        offset = info["master_repl_offset"]
        replicas = [info.get(f"slave{i}") for i in range(count)]
        return info["connected_slaves"] == count and all(
            r and r["state"] == "online" and r["offset"] == offset for r in replicas
        )

    wait_until(caught_up, f"{count} replicas of port {master.port} to catch up")


class Sentinel:
    """One Sentinel process watching a master as service ``mq``; quick to fail over."""

    SERVICE = "mq"

    def __init__(self, directory: Path, master: RedisServer) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind {HOST}\ndir {directory}\n"
            f"sentinel monitor {self.SERVICE} {HOST} {master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
            f"sentinel failover-timeout {self.SERVICE} 2000\n"
        )
        self.executor = TCPExecutor(
            [REDIS_SERVER, str(conf), "--sentinel"],
            host=HOST,
            port=self.port,
            timeout=READY_TIMEOUT,
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.port}/{self.SERVICE}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def master_port(self) -> int:
        """The master's port once a failover is over (clients ask ``SENTINEL MASTERS``)."""
        with self.client() as client:
            state = client.sentinel_master(self.SERVICE)
        return int(state["port"]) if state["flags"] == "master" else 0

    def known_replicas(self) -> int:
        with self.client() as client:
            return len(client.execute_command("SENTINEL", "REPLICAS", self.SERVICE))


class Replicated:
    """A master, its replicas and maybe a Sentinel; ``wait_for_failover`` for a new master."""

    def __init__(
        self, master: RedisServer, replicas: list[RedisServer], sentinel: Sentinel | None
    ):
        self.master = master
        self.replicas = replicas
        self._sentinel = sentinel

    @property
    def sentinel(self) -> Sentinel:
        assert self._sentinel is not None, "made with watched=False: no Sentinel"
        return self._sentinel

    def wait_for_failover(self, timeout: float = 60.0) -> RedisServer:
        """Until Sentinel names a replica as the master and it takes writes; that replica."""
        old = self.master.port
        wait_until(
            lambda: self.sentinel.master_port() not in (old, 0), "a Sentinel failover", timeout
        )
        new = next(r for r in self.replicas if r.port == self.sentinel.master_port())
        wait_until(lambda: new.info("replication")["role"] == "master", "the new master")
        return new


@contextlib.contextmanager
def replication(directory: Path) -> Iterator[Callable[..., Replicated]]:
    """``make(replicas=2, *master_args, watched=True)``: a master, replicas in sync, and
    (unless ``watched=False``) a Sentinel on them, which fails over when the master is
    silent for half a second."""
    servers: list[RedisServer] = []
    sentinels: list[Sentinel] = []

    def make(replicas: int = 2, *master_args: str, watched: bool = True) -> Replicated:
        base = directory / f"replicated-{len(servers)}"
        plain = ("--save", "", "--appendonly", "no")
        quick = ("--repl-diskless-sync-delay", "0")  # not the default 5 s wait for more replicas
        master = RedisServer(base / "master", *plain, *quick, *master_args).start()
        servers.append(master)
        copies = []
        for i in range(replicas):
            of = ("--replicaof", HOST, str(master.port))
            replica = RedisServer(base / f"replica{i}", *plain, *of)
            servers.append(replica)
            copies.append(replica.start())
        wait_for_replicas(master, replicas)
        if not watched:
            return Replicated(master, copies, None)
        sentinel = Sentinel(base / "sentinel", master)
        sentinels.append(sentinel)
        sentinel.executor.start()
        wait_until(lambda: sentinel.known_replicas() == replicas, "Sentinel to see the replicas")
        return Replicated(master, copies, sentinel)

    try:
        yield make
    finally:
        for sentinel in sentinels:
            sentinel.executor.stop()
        for server in servers:
            if server.executor.running():
                with contextlib.suppress(ProcessLookupError):
                    server.resume()
                server.stop()


@pytest.fixture
def redis_replicated(tmp_path: Path) -> Iterator[Callable[..., Replicated]]:
    """See :func:`replication`; the servers live in the test's tmp dir."""
    with replication(tmp_path) as make:
        yield make
