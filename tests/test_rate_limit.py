"""Rate limits shared by every flusher: four processes together stay under the limit."""

from __future__ import annotations

import bisect
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.flusher import Flusher
from mailqueue_core.ratelimit import LocalLimits, RateLimit, RateLimiter, parse_rate
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_stores.memory import MemoryStore
from tests.drills import delivered_counts, queue_numbered
from tests.helpers import ScriptedTransport, message, record

RATE, BURST, TOTAL = 50, 10, 1000


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


@pytest.mark.drill
def test_four_flushers_share_one_limit(redis_server, tmp_path):
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    queue_numbered(url, TOTAL)
    with FaultySMTPServer() as smtp:
        module = f"rate_{uuid.uuid4().hex}"
        (tmp_path / f"{module}.py").write_text(
            "MAILQUEUE = "
            + repr(
                {
                    "STORE": url,
                    "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}",
                    "BATCH_SIZE": 20,
                    "RATE_LIMIT": {"MESSAGES": f"{RATE}/s", "BURST": BURST},
                }
            )
            + "\n"
        )
        env = {**os.environ, "PYTHONPATH": f"{os.getcwd()}:{tmp_path}"}
        command = [sys.executable, "-m", "mailqueue_core.cli", "flush", "--settings", module]
        processes = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE) for _ in range(4)]
        for process in processes:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        arrivals = [m.arrived for m in smtp.messages]
        counts = delivered_counts(smtp.messages)
    peak = max_in_any_window(arrivals)
    span = max(arrivals) - min(arrivals)
    print(
        f"\nrate limit {RATE}/s burst {BURST}, 4 flushers, {TOTAL} messages: "
        f"peak {peak} in any 1 s window, overall {TOTAL / span:.1f}/s, "
        f"{len(counts)} delivered, {sum(counts.values()) - len(counts)} duplicates"
    )
    assert len(counts) == TOTAL and max(counts.values()) == 1
    # Tokens are taken at most RATE a second plus the BURST; arrival at the server
    # follows each token by a send whose duration varies by milliseconds, which can
    # move one message across a window's edge.
    assert peak <= RATE + BURST + 1


def test_per_domain_bucket_and_local_limits():
    clock = [1000.0]
    limiter = RateLimiter(
        RateLimit.from_settings({"DOMAINS": {"Slow.example": "1/s"}, "BURST": 1}),
        LocalLimits(),
        lambda: clock[0],
    )
    stop = threading.Event()
    slow = message("a@slow.example", created=0)
    fast = message("a@fast.example", created=0)
    assert limiter.wait_to_send(slow, stop, deadline=clock[0] + 10)
    assert limiter.wait_to_send(fast, stop, deadline=clock[0] + 10)  # no bucket for it
    # The next one would wait a second; with the deadline closer, it gives up.
    assert not limiter.wait_to_send(slow, stop, deadline=clock[0] + 0.5)
    stop.set()
    assert not limiter.wait_to_send(slow, stop, deadline=clock[0] + 10)


def test_connection_cap_gives_the_batch_back_when_no_slot_is_free():
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    limit = RateLimit.from_settings({"CONNECTIONS": 1})
    limiter = RateLimiter(limit, store, time.time)
    held = store.acquire_slot("connections", 1, 300, time.time())
    store.enqueue([record(created=time.time())])
    limiter.slot_poll = 0.01
    transport = ScriptedTransport()
    flusher = Flusher(store, transport, limiter=limiter, lease=0.2)
    result = flusher.flush()
    assert result.sent == 0 and transport.opened == 0
    assert store.stats(time.time()).in_flight == 0
    store.release_slot("connections", held)
    assert flusher.flush().sent == 1


def test_a_store_without_the_capability_limits_per_process(caplog, tmp_path):
    from mailqueue_core import commands

    conf = Config.from_settings(
        {"STORE": "memcached://127.0.0.1:1", "RATE_LIMIT": {"MESSAGES": 5}}
    )
    store = __import__("mailqueue_core.plugins", fromlist=["make_store"]).make_store(conf.store)
    limiter = commands._limiter(conf, store)
    assert isinstance(limiter.limits, LocalLimits)
    assert any(
        "each flusher process enforces it on its own" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("50/s", "must be a dict"),
        ({"MESSAGE": 5}, "unknown key"),
        ({"MESSAGES": "fast"}, "must be a rate"),
        ({"MESSAGES": 0}, "must be a rate"),
        ({"BURST": 0.5, "MESSAGES": 1}, "BURST"),
        ({"DOMAINS": ["a"]}, "DOMAINS"),
        ({"CONNECTIONS": 0}, "CONNECTIONS"),
    ],
)
def test_bad_rate_limit_settings(value, message):
    with pytest.raises(ConfigurationError, match=message):
        Config.from_settings({"STORE": "memory://", "RATE_LIMIT": value})


def test_rates():
    assert parse_rate("600/m", "x") == 10.0
    assert parse_rate("36/h", "x") == 0.01
    assert parse_rate(2.5, "x") == 2.5


def test_a_rate_slower_than_the_lease_ends_the_run_instead_of_spinning():
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=time.time()) for _ in range(3)])
    limit = RateLimit.from_settings({"MESSAGES": "1/h"})
    limiter = RateLimiter(limit, store, time.time)
    transport = ScriptedTransport()
    result = Flusher(store, transport, limiter=limiter).flush()
    assert result.sent == 1  # the bucket's one token; the next would wait an hour
    assert transport.opened == 1  # not reopened again and again
    assert store.stats(time.time()).ready == 2
