"""Pieces of the crash and freeze drills: flusher processes configured by a settings
module, killed or frozen at chosen points, and the tally of what reached the server.

The flushers are the standalone command reading ``MAILQUEUE`` from a settings module
written into the test's directory (``--settings``), so that a drill can give them a
short lease or a small batch. Their stderr goes to a file, never to a pipe: a flusher
that logs many burials must not block on a full pipe while the drill waits for it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from mailqueue_core import codec
from mailqueue_core.errors import CodecError
from mailqueue_core.store import Store
from mailqueue_core.testing.smtpserver import FaultySMTPServer, Received
from tests.drills import SUBJECT

REPO = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "drill_settings"
POLL = 0.01  # seconds between looks at a condition that has no event to wait on


def write_settings(directory: Path, mailqueue: Mapping[str, object]) -> str:
    """Write a settings module holding ``MAILQUEUE`` into ``directory``; return its name."""
    (directory / f"{SETTINGS_MODULE}.py").write_text(f"MAILQUEUE = {dict(mailqueue)!r}\n")
    return SETTINGS_MODULE


@dataclasses.dataclass
class FlusherProcess:
    """One ``mailqueue flush --settings ...`` process and the file its stderr goes to."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> bool:
        """SIGKILL; True when it was still running (a real crash, not a corpse)."""
        was_running = self.running
        if was_running:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)
        return was_running and self.popen.returncode == -signal.SIGKILL

    def group_alive(self) -> bool:
        """Whether any process of its group (it, its ``--workers``) still runs.

        Read from /proc, where an exited process that no one has reaped yet
        (a zombie, which ``killpg(group, 0)`` would still find) shows as such.
        """
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended while we looked
            state, pgrp = fields[0], int(fields[2])
            if pgrp == self.popen.pid and state not in ("Z", "X"):
                return True
        return False

    def kill_group(self) -> None:
        """SIGCONT then SIGKILL to it and its workers, whatever state they are in."""
        for signum in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)
        if self.popen.poll() is None:
            self.popen.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


class Flushers:
    """Starts flusher processes in ``directory``; on exit none of them (nor any of
    their workers) is left running."""

    def __init__(self, directory: Path, module: str, *extra: str) -> None:
        self.directory = directory
        self.command = [sys.executable, "-m", "mailqueue_core.cli", "flush"]
        self.command += ["--settings", module, "--quiet", *extra]
        paths = [str(directory), str(REPO), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.started: list[FlusherProcess] = []

    def start(self) -> FlusherProcess:
        log = self.directory / f"flusher-{len(self.started)}.log"
        with log.open("wb") as err:
            # A group of its own, so that its --workers can be found and ended with it.
            popen = subprocess.Popen(
                self.command,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        process = FlusherProcess(popen, log)
        self.started.append(process)
        return process

    def __enter__(self) -> Flushers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.started:
            process.kill_group()  # a frozen one is let run first, or it could not die


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    watched: FlusherProcess | None = None,
) -> None:
    """Wait, bounded, for a condition that no event announces; fail saying what
    (and, for a ``watched`` flusher, whether it still runs and what it logged)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            detail = ""
            if watched is not None:
                state = "running" if watched.running else f"exited {watched.popen.returncode}"
                detail = f"; the flusher is {state}, its log:\n{watched.stderr()}"
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(POLL)


def wait_for_deliveries(
    server: FaultySMTPServer,
    n: int,
    processes: Iterable[FlusherProcess],
    timeout: float = 60.0,
) -> bool:
    """Wait until the server took ``n`` messages (True) or every process exited (False)."""
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.wait_for(n, timeout=0.05)
            return True
        except TimeoutError:
            if not any(p.running for p in watched):
                return len(server.messages) >= n
            if time.monotonic() > deadline:
                raise


def kill_at_random(
    rng: random.Random,
    server: FaultySMTPServer,
    victim: FlusherProcess,
    *,
    max_deliveries: int,
    max_delay: float,
) -> tuple[bool, str]:
    """SIGKILL ``victim`` at a random point: after a random number of further
    deliveries (by any flusher), or after a random delay from now, which may fall
    in its start-up, inside a claim, or between a send and its ack.

    Returns (whether it was killed while running, where).
    """
    if rng.random() < 0.5:
        n = rng.randint(0, max_deliveries)
        wait_for_deliveries(server, len(server.messages) + n, [victim])
        where = f"after {n} more deliveries"
    else:
        delay = rng.uniform(0.0, max_delay)
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.wait(timeout=delay)  # a random kill point, not a wait for a result
        where = f"after {delay:.3f} s"
    return victim.kill(), where


# -- the tally -------------------------------------------------------------------------


def number(data: bytes) -> int:
    match = SUBJECT.search(data)
    assert match, "a drill mail without its numbered subject"
    return int(match.group(1))


def buried_numbers(store: Store) -> dict[int, str]:
    """Drill number -> burial reason, for every dead letter of the namespace."""
    buried: dict[int, str] = {}
    for dead in store.dead_letters():
        try:
            subject = codec.decode(dead.record).subject
        except CodecError as exc:
            raise AssertionError(f"a dead letter that cannot be decoded: {exc}") from None
        assert subject.startswith("drill "), subject
        buried[int(subject.split()[1])] = dead.reason
    return buried


@dataclasses.dataclass
class Tally:
    """What happened to each of ``messages`` numbered mails.

    ``delivered``: accepted with a 250 at least once. ``lost``: neither delivered nor
    buried. ``duplicated``: copies the server received beyond the first, split into
    those after a drop after the final dot (the server had it, the client could not
    know) and the rest (which only a killed flusher can cause).
    """

    messages: int
    delivered: int
    buried: int
    lost: int
    duplicated: int
    duplicated_after_drop: int
    reached_and_buried: int
    buried_reasons: collections.Counter[str]

    @property
    def duplicated_other(self) -> int:
        return self.duplicated - self.duplicated_after_drop

    @classmethod
    def count(
        cls,
        messages: int,
        accepted: Sequence[Received],
        dropped: Sequence[Received] = (),
        buried: Mapping[int, str] | None = None,
        reason: Callable[[str], str] = str,
    ) -> Tally:
        buried = buried or {}
        ok = collections.Counter(number(m.data) for m in accepted)
        drop = collections.Counter(number(m.data) for m in dropped)
        unknown = (set(ok) | set(drop) | set(buried)) - set(range(messages))
        assert not unknown, f"numbers that were never queued: {sorted(unknown)[:10]}"
        duplicated = after_drop = 0
        for i in range(messages):
            copies = ok[i] + drop[i]
            if copies > 1:
                duplicated += copies - 1
                after_drop += min(drop[i], copies - 1)
        return cls(
            messages=messages,
            delivered=len(ok),
            buried=len(buried),
            lost=sum(1 for i in range(messages) if i not in ok and i not in buried),
            duplicated=duplicated,
            duplicated_after_drop=after_drop,
            reached_and_buried=len((set(ok) | set(drop)) & set(buried)),
            buried_reasons=collections.Counter(reason(r) for r in buried.values()),
        )

    def line(self, label: str, kills: int) -> str:
        return (
            f"{label}: {self.messages} messages, {self.delivered} delivered, "
            f"{self.lost} lost, {self.duplicated} duplicated, {kills} kills"
        )


@contextlib.contextmanager
def closing_store(store: Store) -> Iterator[Store]:
    try:
        yield store
    finally:
        store.close()
