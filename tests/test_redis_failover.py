"""Durable enqueue across a Sentinel failover: ``min_replicas`` (issue 11, item 5).

With ``min_replicas=N`` enqueue returns only after N replicas acknowledged the
write (``WAIT`` on the same connection); fewer within ``replica_timeout`` is
``StoreUnavailable`` (the backend falls back as for an outage) and the store
takes back what it added. The drill stalls the replicas (SIGSTOP; the master
gives up on them, as ``repl-timeout`` would), keeps enqueueing, kills the
master and lets Sentinel promote a replica: without the option the mail
acknowledged during the stall is gone, with it none is. The pause flag is
confirmed the same way, so a pause or resume the store acknowledged survives
the failover (without the option, one set during the stall is undone). Bigger
runs, and the cost of the option on loopback::

    python -m tests.test_redis_failover drill --before 2000 --during 300
    python -m tests.test_redis_failover cost --count 5000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.mail import send_mail
from django.test import override_settings

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from tests.servers.redis import Replicated, replication, wait_for_replicas, wait_until
from tests.test_redis_wakeups import waiting

pytestmark = pytest.mark.drill

BATCH = 25


@pytest.fixture
def now() -> float:
    return time.time()


def count_live(store: RedisStore, now: float) -> set[str]:
    """The ids the store holds (claims them all, then gives them back)."""
    ids: set[str] = set()
    claims = []
    while batch := store.fetch_due(now, 500, LEASE):
        ids.update(c.id for c in batch)
        claims += batch
    for claim in claims:
        store.release(claim)
    return ids


def test_enqueue_returns_once_the_replicas_have_it(redis_replicated, now):
    cluster = redis_replicated(1)
    with RedisStore(cluster.sentinel.url, namespace="wait", min_replicas=1) as store:
        store.enqueue([make_record(now) for _ in range(3)])
    with cluster.replicas[0].client() as replica:
        assert replica.zcard("mailqueue:{wait}:due") == 3


def test_a_stalled_replica_makes_enqueue_unavailable_and_leaves_nothing(redis_replicated, now):
    cluster = redis_replicated(1)
    url = f"{cluster.sentinel.url}?namespace=stalled&min_replicas=1"
    with RedisStore(url, replica_timeout=5) as healthy:
        healthy.enqueue([make_record(now)])  # a loaded machine may take a while
    with RedisStore(url + "&replica_timeout=0.1") as store:
        cluster.replicas[0].pause()
        try:
            with pytest.raises(StoreUnavailable, match="only 0 of the 1 replicas") as info:
                store.enqueue([make_record(now), make_record(now)])
            assert "min_replicas" in str(info.value)
            # What the master had added is taken back: the caller falls back,
            # and the message must not be sent from here as well.
            assert store.stats(now).ready == 1
        finally:
            cluster.replicas[0].resume()


def test_too_few_replicas_falls_back(redis_replicated, redis_server):
    cluster = redis_replicated(1)
    url = f"{cluster.sentinel.url}?namespace={uuid.uuid4().hex}&min_replicas=2"
    fallback = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    with override_settings(
        MAILQUEUE={"STORE": url + "&replica_timeout=0.05", "FALLBACK_STORE": fallback}
    ):
        assert send_mail("s", "b", "site@example.com", ["a@example.com"]) == 1
    with RedisStore(fallback) as store:
        assert store.stats(time.time()).ready == 1
    with RedisStore(url) as store:
        assert store.stats(time.time()).ready == 0


def test_only_what_the_enqueue_added_is_taken_back(redis_replicated, now):
    cluster = redis_replicated(1, watched=False)
    url = f"{cluster.master.url}?namespace=again&min_replicas=1"
    kept = make_record(now)
    with RedisStore(url, replica_timeout=5) as healthy:
        healthy.enqueue([kept])
    with RedisStore(url + "&replica_timeout=0.1") as store:
        cluster.replicas[0].pause()
        try:
            with pytest.raises(StoreUnavailable):
                store.enqueue([kept, make_record(now)])  # the first one is there already
            with pytest.raises(StoreUnavailable):
                store.enqueue([kept])  # nothing added, nothing to take back
        finally:
            cluster.replicas[0].resume()
        assert count_live(store, now) == {kept.id}


def test_a_master_that_stops_answering_keeps_what_it_could_not_take_back(
    redis_replicated, now, caplog
):
    # The replica stalls, so WAIT fails; then the master stops taking
    # commands (CLIENT PAUSE) before the store can take the copy back: it says
    # so, and the copy may be delivered twice (from here and the fallback).
    # No Sentinel: it would see the paused master as down.
    cluster = redis_replicated(1, watched=False)
    url = f"{cluster.master.url}?namespace=paused&min_replicas=1&replica_timeout=0.5"
    store = RedisStore(url, socket_timeout=1)
    store.ping()
    cluster.replicas[0].pause()
    failure: list[BaseException] = []

    def enqueue() -> None:
        try:
            store.enqueue([make_record(now)])
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    worker = threading.Thread(target=enqueue)
    with cluster.master.client() as master:
        try:
            worker.start()
            wait_until(lambda: master.info("clients")["blocked_clients"] == 1, "WAIT blocking")
            master.execute_command("CLIENT", "PAUSE", 3000, "ALL")
            worker.join(timeout=30)
        finally:
            master.execute_command("CLIENT", "UNPAUSE")
            cluster.replicas[0].resume()
            store.close()
    (exc,) = failure
    assert isinstance(exc, StoreUnavailable)
    assert "only 0 of the 1" in str(exc)
    assert "could not take back 1 message(s)" in caplog.text
    with RedisStore(url) as check:
        assert check.stats(now).ready == 1


def test_a_cluster_without_replicas_refuses_durable_enqueue(redis_cluster, now):
    url = redis_cluster.url + "?min_replicas=1&replica_timeout=0.05"
    with RedisStore(url, namespace=uuid.uuid4().hex) as store:
        with pytest.raises(StoreUnavailable, match="only 0 of the 1"):
            store.enqueue([make_record(now)])
        assert store.stats(now).ready == 0
        with pytest.raises(StoreUnavailable, match="only 0 of the 1"):
            store.set_paused(True)


def stall_replicas(cluster: Replicated) -> None:
    """Stop the replicas (SIGSTOP) and have the master give up on them, as repl-timeout would."""
    for replica in cluster.replicas:
        replica.pause()
    with cluster.master.client() as master:
        master.client_kill_filter(_type="replica")
        wait_until(lambda: master.info("replication")["connected_slaves"] == 0, "replicas gone")


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_pause_the_store_confirmed_survives_a_failover(redis_replicated, min_replicas):
    # "held" is paused while the replica keeps up, then resumed while it stalls;
    # "stalled" is paused while it stalls. Each acknowledged change must be what the
    # new master says after the failover; a refused one the operator knows to repeat.
    cluster = redis_replicated(1)
    url = f"{cluster.sentinel.url}?min_replicas={min_replicas}"
    acknowledged: dict[str, bool] = {}

    def pause(namespace: str, paused: bool, replica_timeout: float) -> None:
        with RedisStore(url, namespace=namespace, replica_timeout=replica_timeout) as store:
            try:
                store.set_paused(paused)
            except StoreUnavailable as refused:
                assert "only 0 of the 1" in str(refused) and "failover" in str(refused)
                assert store.paused() == paused  # the master has it all the same
            else:
                acknowledged[namespace] = paused

    pause("held", True, 5.0)
    wait_for_replicas(cluster.master, 1)  # without the option, so the replica has it too
    stall_replicas(cluster)
    pause("held", False, 0.2)
    pause("stalled", True, 0.2)
    cluster.master.kill()
    for replica in cluster.replicas:
        replica.resume()
    cluster.wait_for_failover()
    after = {}
    for namespace in ("held", "stalled"):
        with RedisStore(url, namespace=namespace) as store:
            after[namespace] = store.paused()
    assert after == {"held": True, "stalled": False}
    if min_replicas:
        assert acknowledged == {"held": True}  # the two changes during the stall were refused
    else:
        assert acknowledged == {"held": False, "stalled": True}  # and both were lost


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_replicas": -1}, "min_replicas"),
        ({"min_replicas": "two"}, "min_replicas"),
        ({"min_replicas": True}, "min_replicas"),
        ({"replica_timeout": 0}, "replica_timeout"),
        ({"max_clock_skew": -1}, "max_clock_skew"),
        ({"max_clock_skew": "nan"}, "max_clock_skew"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigurationError, match=message):
        RedisStore("redis://h", **options)


def test_options_from_the_url():
    settings = RedisStore(
        "redis://h?min_replicas=2&replica_timeout=0.5&max_clock_skew=inf&allow_eviction=yes"
    ).settings.options
    assert (settings.min_replicas, settings.replica_timeout) == (2, 0.5)
    assert settings.max_clock_skew == float("inf")
    assert settings.allow_eviction is True
    defaults = RedisStore("redis://h").settings.options
    assert (defaults.min_replicas, defaults.replica_timeout, defaults.max_clock_skew) == (
        0,
        1.0,
        60.0,
    )
    assert defaults.allow_eviction is False


def test_a_wait_for_mail_across_a_sentinel_failover(redis_replicated, now):
    # A flusher blocked in XREAD when the master dies is told at once, and waits
    # on the new master once Sentinel has promoted one.
    cluster = redis_replicated(1)
    url = f"{cluster.sentinel.url}?namespace=waking"
    with RedisStore(url) as web, RedisStore(url) as waiter:
        waiter.fetch_due(now, 10, LEASE)
        join = waiting(waiter, 30.0)
        cluster.master.kill()
        failed, took = join()
        assert isinstance(failed, StoreUnavailable) and took < 2.0
        cluster.wait_for_failover()
        assert waiter.fetch_due(time.time(), 10, LEASE) == []
        join = waiting(waiter, 30.0)
        web.enqueue([make_record(time.time())])
        woken, took = join()
        assert woken is True and took < 5.0


# -- the drill -----------------------------------------------------------------------


def failover_drill(cluster: Replicated, min_replicas: int, before: int, during: int) -> dict:
    """Enqueue ``before`` mails, stall the replicas, enqueue ``during`` more, kill the
    master, let Sentinel fail over; count what the new master has of what was acknowledged.
    """
    now = time.time()
    url = f"{cluster.sentinel.url}?namespace=drill&min_replicas={min_replicas}"
    acknowledged: set[str] = set()
    refused = 0

    def enqueue(count: int, replica_timeout: float) -> None:
        nonlocal refused
        with RedisStore(url, replica_timeout=replica_timeout) as store:
            for _ in range(0, count, BATCH):
                records = [make_record(now) for _ in range(BATCH)]
                try:
                    store.enqueue(records)
                except StoreUnavailable:
                    refused += len(records)
                else:
                    acknowledged.update(r.id for r in records)

    enqueue(before, 5.0)  # healthy replicas answer in a millisecond; a loaded machine, later
    stall_replicas(cluster)
    enqueue(during, 0.2)
    cluster.master.kill()
    for replica in cluster.replicas:
        replica.resume()
    cluster.wait_for_failover()
    with RedisStore(url) as store:
        present = count_live(store, now)
    return {
        "acknowledged": len(acknowledged),
        "refused": refused,
        "lost": len(acknowledged - present),
        "extra": len(present - acknowledged),
    }


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_drill_master_killed_while_the_replicas_stall(redis_replicated, min_replicas):
    figures = failover_drill(redis_replicated(2), min_replicas, before=200, during=100)
    print(f"\nSentinel failover, replicas stalled, min_replicas={min_replicas}: {figures}")
    if min_replicas:
        assert figures == {"acknowledged": 200, "refused": 100, "lost": 0, "extra": 0}
    else:
        # Without the option every write during the stall is acknowledged and lost
        # (and, on a loaded machine, writes the replicas had not caught up with too).
        assert (figures["acknowledged"], figures["refused"], figures["extra"]) == (300, 0, 0)
        assert 100 <= figures["lost"] <= 300


# -- the documented command: a bigger drill, and what the option costs -----------------


def enqueue_cost(url: str, count: int, batch: int) -> dict[str, float]:
    """Median and 99th percentile of one enqueue call (``batch`` records), in ms."""
    times = []
    with RedisStore(url) as store:
        for _ in range(count):
            records = [make_record(time.time(), data=b"x" * 2048) for _ in range(batch)]
            start = time.perf_counter()
            store.enqueue(records)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1]}


def _with_servers(run: Callable[[Replicated], None], replicas: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, replication(Path(tmp)) as make:
        run(make(replicas))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.test_redis_failover")
    sub = parser.add_subparsers(dest="what", required=True)
    drill = sub.add_parser("drill", help="the failover drill, with and without min_replicas")
    drill.add_argument("--before", type=int, default=2000)
    drill.add_argument("--during", type=int, default=300)
    cost = sub.add_parser("cost", help="enqueue time with and without min_replicas=1")
    cost.add_argument("--count", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.what == "drill":
        for min_replicas in (0, 1):

            def run(cluster: Replicated, min_replicas: int = min_replicas) -> None:
                figures = failover_drill(cluster, min_replicas, args.before, args.during)
                print(f"min_replicas={min_replicas}: {figures}", flush=True)

            _with_servers(run, 2)
        return 0

    def measure(cluster: Replicated) -> None:
        for batch in (1, 100):
            for options in ("", "&min_replicas=1"):
                url = f"{cluster.master.url}?namespace=cost{batch}{options}"
                figures = enqueue_cost(url, max(1, args.count // batch), batch)
                print(
                    f"batch {batch:>3} {options or 'no option':<16} median "
                    f"{figures['median']:.3f} ms, p99 {figures['p99']:.3f} ms",
                    flush=True,
                )

    _with_servers(measure, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
