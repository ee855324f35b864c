"""`mailqueue flush` as cron and services run it: workers, --loop, SIGTERM and SIGHUP,
store outages, a store found unfit, the fallback."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailqueue_core.plugins import make_store
from tests.drills import delivered_counts, flusher_command, queue_numbered
from tests.drills_kill import Flushers, wait_for_deliveries, wait_until, write_settings


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
    assert done.returncode == 2  # status creates no queue, and the site never made one
    assert f"there is no queue at {tmp_path}/main.db" in done.stderr
    make_store(main).stats(time.time())  # the main queue, as the site's first mail makes it
    done = standalone(tmp_path, "status", "--settings", module, "--check")
    assert done.returncode == 1
    assert "fallback store:\n  ready        3" in done.stdout
    assert "3 message(s) wait in the fallback store" in done.stderr
    done = standalone(tmp_path, "status", "--settings", module, "--json")
    assert '"fallback": {' in done.stdout


# -- a service outlives its surroundings ----------------------------------------------


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """A store outage: another connection holds the SQLite file's write lock."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def outage_waits(log: str) -> list[float]:
    return [float(w) for w in re.findall(r"the store failed .*; trying again in ([\d.]+) s", log)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_service_outlives_a_store_outage(tmp_path, smtp, workers):
    path = tmp_path / "q.db"
    queue_numbered(f"sqlite:///{path}", 5)
    module = write_settings(
        tmp_path,
        {"STORE": f"sqlite:///{path}?timeout=0.05", "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}"},
    )
    extra = ("--loop", "--interval", "0.1", "--workers", str(workers))
    with Flushers(tmp_path, module, *extra) as flushers:
        service = flushers.start()
        smtp.wait_for(5, timeout=60)
        with write_lock_held(path):  # claims fail: "database is locked"
            wait_until(
                lambda: len(outage_waits(service.stderr())) >= 3 * workers,
                "the service to meet the outage three times per worker",
            )
        queue_numbered(f"sqlite:///{path}", 5, start=5)
        smtp.wait_for(10, timeout=60)
        wait_until(lambda: "the store answers again" in service.stderr(), "the recovery")
        assert service.running
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0, service.stderr()
    log = service.stderr()
    waits = outage_waits(log)
    print(f"\nservice, {workers} worker(s), store outage: backed off {waits}")
    assert {0.1, 0.2, 0.4} <= set(waits)  # doubling from --interval
    assert "Traceback" not in log and "stopping the other" not in log
    counts = delivered_counts(smtp.messages)
    assert sorted(counts) == list(range(10)) and max(counts.values()) == 1


def test_a_service_outlives_a_redis_restart(redis_server_factory, tmp_path, smtp):
    server = redis_server_factory()
    url = f"{server.url}?namespace=service"
    queue_numbered(url, 3)
    module = write_settings(tmp_path, {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}"})
    with Flushers(tmp_path, module, "--loop", "--interval", "0.1") as flushers:
        service = flushers.start()
        smtp.wait_for(3, timeout=60)
        server.stop()
        wait_until(lambda: len(outage_waits(service.stderr())) >= 2, "the service to see it")
        server.start()
        queue_numbered(url, 3, start=3)
        smtp.wait_for(6, timeout=60)
        assert service.running
        service.signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0, service.stderr()
    assert "Traceback" not in service.stderr()
    counts = delivered_counts(smtp.messages)
    assert sorted(counts) == list(range(6)) and max(counts.values()) == 1


@pytest.mark.parametrize(
    ("loop", "workers"), [(False, 1), (True, 1), (True, 2)], ids=["once", "loop", "loop-2-workers"]
)
def test_sighup_gives_the_batch_back_and_the_flusher_goes_on(tmp_path, smtp, loop, workers):
    url = f"sqlite:///{tmp_path}/q.db"
    total = 30
    queue_numbered(url, total)
    module = write_settings(
        tmp_path,
        {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}", "BATCH_SIZE": 10},
    )
    smtp.fault("dot", action="stall", seconds=0.02)
    extra = ["-v", "2", "--workers", str(workers)]
    extra += ["--loop", "--interval", "0.1"] if loop else []
    with Flushers(tmp_path, module, *extra) as flushers:
        flusher = flushers.start()
        wait_for_deliveries(smtp, 3, [flusher])
        flusher.signal(signal.SIGHUP)  # to the parent only, as `systemctl reload` does
        wait_until(
            lambda: flusher.stderr().count("starting over (SIGHUP): checking") >= workers,
            "every worker to start over",
            watched=flusher,
        )
        smtp.wait_for(total, timeout=60)
        if loop:
            assert flusher.running  # SIGHUP never ends a service
            flusher.signal(signal.SIGTERM)
        assert flusher.wait(timeout=60) == 0, flusher.stderr()
    log = flusher.stderr()
    given_back = [int(n) for n in re.findall(r"SIGHUP\); giving (\d+) message\(s\)", log)]
    print(f"\nSIGHUP ({'loop' if loop else 'once'}, {workers} worker(s)): gave back {given_back}")
    assert given_back and all(n > 0 for n in given_back)
    counts = delivered_counts(smtp.messages)
    assert sorted(counts) == list(range(total)) and max(counts.values()) == 1
    stats = make_store(url).stats(time.time())
    assert (stats.ready, stats.in_flight, stats.stuck) == (0, 0, 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_store_that_cannot_keep_its_promises_is_refused(
    redis_server_factory, tmp_path, smtp, workers
):
    server = redis_server_factory("--maxmemory-policy", "allkeys-lru", appendonly=False)
    url = f"{server.url}?namespace=evicting"
    queue_numbered(url, 2)
    command = [*flusher_command(url, smtp.port), "--workers", str(workers)]
    done = run(command)
    assert done.returncode == 1
    assert "maxmemory-policy" in done.stderr and "Traceback" not in done.stderr
    assert smtp.messages == []
    # A service that finds it at a later check refuses to go on the same way.
    with server.client() as client:
        client.config_set("maxmemory-policy", "noeviction")
    module = write_settings(tmp_path, {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}"})
    extra = ("--loop", "--interval", "0.1", "--workers", str(workers))
    with Flushers(tmp_path, module, *extra) as flushers:
        service = flushers.start()
        smtp.wait_for(2, timeout=60)
        with server.client() as client:
            client.config_set("maxmemory-policy", "allkeys-lru")
        service.signal(signal.SIGHUP)  # checks the store now rather than within 60 s
        assert service.wait(timeout=30) == 1
    log = service.stderr()
    assert "configuration error" in log and "maxmemory-policy" in log
    assert "Traceback" not in log


def test_workers_and_an_unreachable_store(unused_tcp_port, smtp):
    url = f"redis://127.0.0.1:{unused_tcp_port}/0"
    once = run([*flusher_command(url, smtp.port), "--workers", "2"])
    assert once.returncode == 1 and "the store cannot be reached" in once.stderr
    assert "failed during flush" not in once.stderr  # nothing was claimed: no duplicate
    # A service waits for its store instead: its workers back off until stopped.
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [*flusher_command(url, smtp.port), "--workers", "2", "--loop", "--interval", "0.1"]
    service = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert service.stderr is not None
    failures = 0
    while failures < 4:  # two from each worker, or more from one: both kept running
        failures += "the store failed" in service.stderr.readline()
    service.send_signal(signal.SIGTERM)
    _, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert "Traceback" not in err


def test_workers_never_outlive_their_parent(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/q.db"
    queue_numbered(url, 20)
    module = write_settings(
        tmp_path, {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}", "BATCH_SIZE": 5}
    )
    smtp.fault("dot", action="stall", seconds=0.02)
    extra = ("--loop", "--interval", "0.1", "--workers", "2")
    with Flushers(tmp_path, module, *extra) as flushers:
        service = flushers.start()
        wait_for_deliveries(smtp, 2, [service])
        assert service.kill()  # the parent only, as the OOM killer would
        wait_until(lambda: not service.group_alive(), "the workers to stop on their own")
    log = service.stderr()
    assert log.count("the flusher's parent process is gone; this worker stops") == 2
    # They stopped cleanly: each finished the message in hand and gave the rest back.
    stats = make_store(url).stats(time.time())
    assert (stats.in_flight, stats.stuck) == (0, 0)
    assert stats.ready == 20 - len(smtp.messages)
