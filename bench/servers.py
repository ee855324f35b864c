"""The servers a benchmark run starts for itself, each on a free loopback port.

``redis-server`` (no persistence) and ``memcached`` run under mirakuru, as in the
tests. The SMTP sinks run as processes of their own so that their CPU time is
read apart from the sender's: the aiosmtpd sink (:mod:`bench.sink`) always, and
Postfix's ``smtp-sink`` when Debian's ``postfix`` package is installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mirakuru import TCPExecutor

HOST = "127.0.0.1"
REDIS_SERVER = "/usr/bin/redis-server"
MEMCACHED = "/usr/bin/memcached"
SMTP_SINK = "/usr/sbin/smtp-sink"
READY_TIMEOUT = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def python_path() -> str:
    """PYTHONPATH for a child process that imports ``bench`` from this checkout."""
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class MachineBusy:
    """The share of all cores busy (any process, ours or not) from now until ``done()``."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def done(self) -> float:
        busy, total = self._read()
        return (busy - self.start[0]) / max(1, total - self.start[1])


def _require(binary: str, package: str) -> None:
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} is missing: apt-get install {package}")


class Redis:
    def __init__(self, directory: Path) -> None:
        _require(REDIS_SERVER, "redis-server")
        self.port = free_port()
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--dir", str(directory)]
        command += ["--save", "", "--appendonly", "no"]
        self.executor = TCPExecutor(command, host=HOST, port=self.port, timeout=READY_TIMEOUT)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
        return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()

    def __enter__(self) -> Redis:
        self.executor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.executor.stop()


class Memcached:
    def __init__(self) -> None:
        _require(MEMCACHED, "memcached")
        self.port = free_port()
        # 1 GiB so that nothing a run queues is evicted.
        command = [MEMCACHED, "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "1024"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        self.executor = TCPExecutor(command, host=HOST, port=self.port, timeout=READY_TIMEOUT)

    @property
    def url(self) -> str:
        return f"memcached://{HOST}:{self.port}"

    def version(self) -> str:
        out = subprocess.run([MEMCACHED, "-V"], capture_output=True, text=True).stdout
        return out.split()[-1] if out else "?"

    def __enter__(self) -> Memcached:
        self.executor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.executor.stop()


class Sink:
    """An SMTP server that accepts everything, in a process of its own."""

    name = "aiosmtpd"

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.sink", str(self.port)]

    def cpu(self) -> float:
        assert self.process is not None
        return process_cpu(self.process.pid)

    def __enter__(self) -> Sink:
        env = {**os.environ, "PYTHONPATH": python_path()}
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        _wait_for_port(self.port, self.process)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(READY_TIMEOUT)


class PostfixSink(Sink):
    """Postfix's ``smtp-sink``: a C event loop whose own cost is close to nothing."""

    name = "smtp-sink"

    @staticmethod
    def available() -> bool:
        return os.access(SMTP_SINK, os.X_OK)

    def command(self) -> list[str]:
        # It refuses to run as root without -u; the backlog is the listen() queue.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        return [SMTP_SINK, *user, f"{HOST}:{self.port}", "256"]


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the SMTP sink exited at start ({process.returncode})")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"the SMTP sink did not listen on {port} within {READY_TIMEOUT} s")
