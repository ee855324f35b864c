"""``flush --workers N``: N forked worker processes, each one flusher with its own
store and transport connections (POSIX only).

The parent passes SIGTERM, SIGINT and SIGHUP on to every worker, then adds up
what they report through a pipe each. With ``--loop`` the workers are a
service: when one of them exits on its own (an error it cannot go on from), the
others are stopped too and the command exits 1, so that the service manager
sees it and restarts the whole. A worker whose parent is gone stops too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import warnings
from typing import NoReturn, TextIO

from mailqueue_core.commands.interrupts import Interrupts
from mailqueue_core.commands.output import say
from mailqueue_core.commands.worker import (
    ListenerFactory,
    NotReached,
    flush_one,
    open_store,
    reach,
)
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError, StoreError
from mailqueue_core.flusher import FlushResult
from mailqueue_core.text import get_logger

__all__ = ["run_workers"]

logger = get_logger("mailqueue.commands")

#: Seconds between two looks of a worker at whether its parent is still there.
ORPHAN_CHECK = 1.0


def run_workers(
    options: argparse.Namespace,
    conf: Config,
    interrupts: Interrupts,
    listener: ListenerFactory | None,
    stdout: TextIO,
    stderr: TextIO,
) -> tuple[FlushResult, int]:
    """Run ``options.workers`` workers to the end: (their results added up, exit status)."""
    _check_store(conf, service=options.loop)
    start = time.monotonic()
    parent = os.getpid()
    pipes: dict[int, int] = {}
    for _ in range(options.workers):
        read_end, write_end = os.pipe()
        with interrupts.held() as mask, warnings.catch_warnings():
            # Python 3.12 warns about fork() beside other threads. The child
            # only builds its own store and transport and never takes a lock
            # another thread may hold (logging re-creates its locks at fork).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child; measured by the drills
                os.close(read_end)
                streams = (stdout, stderr)
                _worker(options, conf, interrupts, listener, streams, write_end, mask, parent)
            interrupts.children.add(pid)
        os.close(write_end)
        pipes[pid] = read_end
    total, failed = _collect(pipes, interrupts, service=options.loop)
    total.elapsed = time.monotonic() - start
    return total, failed


def _check_store(conf: Config, *, service: bool) -> None:
    """Refuse to start N workers on a store found unfit (``Store.verify``)."""
    store = open_store(conf)
    try:
        reach(store.verify)
    except NotReached:
        if not service:
            raise
        # A service waits for its store: each worker backs off on its own.
    finally:
        store.close()


def _worker(
    options: argparse.Namespace,
    conf: Config,
    interrupts: Interrupts,
    listener: ListenerFactory | None,
    streams: tuple[TextIO, TextIO],
    write_end: int,
    mask: set[int | signal.Signals],
    parent: int,
) -> NoReturn:  # pragma: no cover - runs in the child; measured by the drills
    stdout, stderr = streams
    code = 0
    try:
        interrupts.children.clear()  # a worker passes signals on to no one
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _stop_when_orphaned(parent, interrupts)
        result = flush_one(options, conf, interrupts, listener, stdout)
        os.write(write_end, json.dumps(dataclasses.asdict(result)).encode())
    except ConfigurationError as exc:
        say(stderr, f"mailqueue: configuration error: {exc}")
        code = 1
    except StoreError as exc:
        say(stderr, f"mailqueue: the store failed during flush: {exc}")
        code = 1
    except BaseException:
        logger.exception("flusher worker failed")
        code = 1
    finally:
        os.close(write_end)
        for stream in (stdout, stderr, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _stop_when_orphaned(parent: int, interrupts: Interrupts) -> None:
    """Stop this worker cleanly once its parent is gone (SIGKILLed, out of memory):
    a worker never outlives the command, so no service is left running unseen."""

    def watch() -> None:
        while not interrupts.stop.wait(ORPHAN_CHECK):
            if os.getppid() != parent:
                logger.error("the flusher's parent process is gone; this worker stops")
                interrupts.stop.set()

    threading.Thread(target=watch, name="mailqueue-parent-watch", daemon=True).start()


def _collect(
    pipes: dict[int, int], interrupts: Interrupts, *, service: bool
) -> tuple[FlushResult, int]:
    total = FlushResult()
    failed = 0
    while pipes:
        pid, wait_status = os.waitpid(-1, 0)  # a signal's handler runs, then it waits on
        read_end = pipes.pop(pid, None)
        if read_end is None:
            continue
        interrupts.children.discard(pid)
        report = _read_all(read_end)
        code = os.waitstatus_to_exitcode(wait_status)
        if code == 0 and report:
            part = json.loads(report)
            total.sent += part["sent"]
            total.deferred += part["deferred"]
            total.buried += part["buried"]
            continue
        failed = 1
        if service and not interrupts.stop.is_set() and interrupts.children:
            logger.error(
                "flusher worker %d stopped (exit status %d); stopping the other %d",
                pid,
                code,
                len(interrupts.children),
            )
            interrupts.stop.set()
            for other in list(interrupts.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGTERM)
    return total, failed


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
