"""`mailqueue flush` as cron and services run it: workers, --loop, SIGTERM, the fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from mailqueue_core.plugins import make_store
from tests.drills import delivered_counts, flusher_command, queue_numbered


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_workers_share_the_queue(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/q.db"
    queue_numbered(url, 300)
    command = [c for c in flusher_command(url, smtp.port) if c != "--quiet"]
    done = run([*command, "--workers", "2"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 300, deferred 0, buried 0")
    counts = delivered_counts(smtp.messages)
    assert len(counts) == 300 and max(counts.values()) == 1
    assert len({m.connection for m in smtp.messages}) >= 2


def test_loop_stops_cleanly_on_sigterm(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/q.db"
    queue_numbered(url, 20)
    command = [c for c in flusher_command(url, smtp.port) if c != "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [*command, "--loop", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    smtp.wait_for(20, timeout=60)
    queue_numbered(url, 5, start=20)  # mail sent while the service runs
    smtp.wait_for(25, timeout=60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) >= 2  # one line per flush that did something, then the total
    assert lines[-1].startswith("sent 25,")


def test_sigterm_mid_batch_finishes_the_message_in_hand_and_gives_back_the_rest(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/q.db"
    queue_numbered(url, 50)
    smtp.fault("dot", action="stall", seconds=0.05)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        flusher_command(url, smtp.port), stderr=subprocess.PIPE, text=True, env=env
    )
    smtp.wait_for(5, timeout=60)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    delivered = len(smtp.messages)
    stats = make_store(url).stats(time.time())
    # Nothing is left claimed: the rest of the batch was given back at once.
    assert (stats.in_flight, stats.ready) == (0, 50 - delivered)


def settings_module(tmp_path, **mailqueue) -> str:
    """A Django settings module holding MAILQUEUE, for the standalone command."""
    name = f"settings_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(f"MAILQUEUE = {mailqueue!r}\n")
    return name


def standalone(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{os.getcwd()}:{tmp_path}"}
    return subprocess.run(
        [sys.executable, "-m", "mailqueue_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_fallback_is_drained_into_the_store(tmp_path, smtp):
    main, fallback = f"sqlite:///{tmp_path}/main.db", f"sqlite:///{tmp_path}/fallback.db"
    queue_numbered(fallback, 10)
    module = settings_module(
        tmp_path, STORE=main, FALLBACK_STORE=fallback, TRANSPORT=f"smtp://127.0.0.1:{smtp.port}"
    )
    done = standalone(tmp_path, "flush", "--settings", module)
    assert done.returncode == 0, done.stderr
    assert "moved 10 message(s) from the fallback store" in done.stderr
    assert len(delivered_counts(smtp.messages)) == 10
    assert make_store(fallback).stats(time.time()).ready == 0


def test_store_down_delivers_from_fallback_and_exits_1(tmp_path, smtp, unused_tcp_port):
    fallback = f"sqlite:///{tmp_path}/fallback.db"
    queue_numbered(fallback, 5)
    module = settings_module(
        tmp_path,
        STORE=f"redis://127.0.0.1:{unused_tcp_port}/0",
        FALLBACK_STORE=fallback,
        TRANSPORT=f"smtp://127.0.0.1:{smtp.port}",
    )
    done = standalone(tmp_path, "flush", "--settings", module)
    assert done.returncode == 1
    assert "delivering straight from the fallback store" in done.stderr
    assert len(delivered_counts(smtp.messages)) == 5


def test_status_reports_the_fallback_store(tmp_path):
    main, fallback = f"sqlite:///{tmp_path}/main.db", f"sqlite:///{tmp_path}/fallback.db"
    queue_numbered(fallback, 3)
    module = settings_module(tmp_path, STORE=main, FALLBACK_STORE=fallback)
    done = standalone(tmp_path, "status", "--settings", module, "--check")
    assert done.returncode == 1
    assert "fallback store:\n  ready        3" in done.stdout
    assert "3 message(s) wait in the fallback store" in done.stderr
    done = standalone(tmp_path, "status", "--settings", module, "--json")
    assert '"fallback": {' in done.stdout
