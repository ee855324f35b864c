"""The crash drills at full size: does the queue lose anything under faults and kills?

    python -m bench.reliability [--messages 10000] [--stores sqlite,redis] [--seed N]
                                [--scenarios kills,faults+kills]
                                [--kills 20] [--fault-rate 0.1] [--flushers 2]
                                [--max-kill-delay 1.0]

For each store, two scenarios on a queue of ``--messages`` numbered mails:

``kills``         ``--flushers`` standalone flusher processes work the queue while one of
                  them is SIGKILLed at a random point ``--kills`` times (each replaced).
``faults+kills``  the same, while ``--fault-rate`` of the messages meet an SMTP fault,
                  an even mix of: 451 and 550 at RCPT (set for chosen recipients; a 451
                  clears after 1-3 tries), 554 and 451 after the final dot, a drop after
                  the final dot (the server had the message; the client cannot know) and
                  a drop mid-DATA (these four armed one at a time, ``times=1``, at random
                  gaps between deliveries, until all have fired).

Then the queue is drained in this process by flushers whose injected clock moves past
the killed flushers' leases and then past each backoff, until nothing is ready,
scheduled or in flight. Every message is then counted: delivered (a 250 at least once),
buried (and why, grouped by reason), lost (neither delivered nor buried: must be 0), and
duplicated, split into copies after a drop after the dot and the rest, which only a
kill can cause (at most one per kill). It starts its own ``redis-server`` on a free
loopback port. Exits 1 if anything was lost or a bound was broken.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import random
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Store
from mailqueue_core.testing.smtpfaults import Fault
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import queue_numbered
from tests.drills_kill import Flushers, Tally, buried_numbers, kill_at_random, write_settings

LEASE = 300.0
LONGEST_BACKOFF = 3600 * 1.1 + 1  # RETRY MAX plus its jitter: every scheduled mail is due
MAX_DRAIN_ROUNDS = 30  # far more than 1-3 transient faults per message can need
REDIS_SERVER = "/usr/bin/redis-server"
STORES = ("sqlite", "redis")
SCENARIOS = ("kills", "faults+kills")

FaultKind = tuple[str, str, str | None, str]  # (kind, stage, reply, action)

# The fault mix, one in six each.
RCPT_FAULTS: list[FaultKind] = [
    ("451 at RCPT", "rcpt", "451 4.2.1 Mailbox busy, try later", "reply"),
    ("550 at RCPT", "rcpt", "550 5.1.1 No such user", "reply"),
]
DATA_FAULTS: list[FaultKind] = [
    ("554 at dot", "dot", "554 5.6.0 Message rejected", "reply"),
    ("451 at dot", "dot", "451 4.3.0 Try again later", "reply"),
    ("drop after dot", "dot", None, "drop"),
    ("drop mid-DATA", "data", None, "drop"),
]


@dataclasses.dataclass
class Outcome:
    label: str
    tally: Tally
    kills: int
    faults_planned: int
    faults_fired: dict[str, int]
    drain_rounds: int
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.tally.lost == 0 and self.tally.duplicated_other <= self.kills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--scenarios", default="kills,faults+kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--flushers", type=int, default=2)
    parser.add_argument(
        "--max-kill-delay",
        type=float,
        default=1.0,
        help="seconds; half the kills wait this long at most",
    )
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for given, known in ((stores, STORES), (scenarios, SCENARIOS)):
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"unknown: {', '.join(sorted(unknown))} (choose from {', '.join(known)})")
    _django()
    print(
        f"bench.reliability: {args.messages} messages, {args.kills} kills, "
        f"{args.flushers} flushers, fault rate {args.fault_rate:.0%}, seed {args.seed}"
    )
    outcomes = []
    with _engine_logs_muted(), tempfile.TemporaryDirectory(prefix="mailqueue-") as tmp:
        for store in stores:
            with _store_url(store, Path(tmp)) as url_for:
                for scenario in scenarios:
                    rate = args.fault_rate if scenario == "faults+kills" else 0.0
                    label = f"{store}, {scenario}"
                    directory = Path(tmp) / f"{store}-{scenario}"
                    directory.mkdir()
                    outcome = run_scenario(label, url_for(scenario), directory, args, rate)
                    report(outcome)
                    outcomes.append(outcome)
    return 0 if all(o.ok for o in outcomes) else 1


def _django() -> None:
    """Django's defaults, unless a settings module is configured (under pytest)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEFAULT_FROM_EMAIL="site@example.com")
        django.setup()


@contextmanager
def _engine_logs_muted() -> Iterator[None]:
    """The draining flusher logs every burial; the report groups them instead."""
    logger = logging.getLogger("mailqueue")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def _store_url(store: str, tmp: Path) -> Iterator[Callable[[str], str]]:
    """Yields scenario name -> URL of a fresh queue in that store."""
    if store == "sqlite":
        yield lambda scenario: f"sqlite:///{tmp}/{scenario.replace('+', '-')}.db"
        return
    from mirakuru import TCPExecutor

    if not Path(REDIS_SERVER).exists():
        raise SystemExit(f"{REDIS_SERVER} is missing: apt-get install redis-server")
    port = _free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(tmp), "--save", "", "--appendonly", "no"]
    executor = TCPExecutor(command, host="127.0.0.1", port=port, timeout=30)
    executor.start()
    try:
        # The drain moves its clock past the killed flushers' leases; the Redis
        # server's clock cannot be moved, so the caller's clock alone decides.
        skew = "max_clock_skew=inf"
        yield lambda _: f"redis://127.0.0.1:{port}/0?namespace={uuid.uuid4().hex}&{skew}"
    finally:
        executor.stop()


def run_scenario(
    label: str, url: str, directory: Path, args: argparse.Namespace, rate: float
) -> Outcome:
    rng = random.Random(f"{args.seed}/{label}")
    start = time.monotonic()
    queue_numbered(url, args.messages)
    with FaultySMTPServer() as server:
        chosen = rng.sample(range(args.messages), round(args.messages * rate))
        mix = [rng.choice(RCPT_FAULTS + DATA_FAULTS) for _ in chosen]
        by_recipient = _arm_recipient_faults(server, rng, chosen, mix)
        feeder = _DataFaultFeeder(
            server, random.Random(rng.random()), [m for m in mix if m in DATA_FAULTS], args
        )
        module = write_settings(
            directory,
            {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{server.port}?timeout=10"},
        )
        with feeder, Flushers(directory, module) as flushers:
            kills = _kill_phase(rng, server, flushers, args)
            rounds = _drain(url, server.port)
        fired = collections.Counter(feeder.fired)
        for kind, fault in by_recipient:
            fired[kind] += fault.fired
        tally = _tally(url, args.messages, server)
    return Outcome(
        label=label,
        tally=tally,
        kills=kills,
        faults_planned=len(chosen),
        faults_fired={kind: n for kind, n in sorted(fired.items()) if n},
        drain_rounds=rounds,
        elapsed=time.monotonic() - start,
    )


def _arm_recipient_faults(
    server: FaultySMTPServer, rng: random.Random, chosen: list[int], mix: list[FaultKind]
) -> list[tuple[str, Fault]]:
    armed = []
    for i, (kind, stage, reply, _) in zip(chosen, mix, strict=True):
        if stage == "rcpt":
            assert reply is not None
            # A busy mailbox clears after a few tries; a missing one never does.
            times = rng.randint(1, 3) if reply.startswith("4") else None
            fault = server.fault(stage, reply, recipients=[f"r{i}@example.com"], times=times)
            armed.append((kind, fault))
    return armed


class _DataFaultFeeder:
    """Arms the after-RCPT faults one at a time (``times=1``), each after a random gap
    of deliveries, so that they hit random messages, first attempts and retries alike.
    """

    def __init__(
        self,
        server: FaultySMTPServer,
        rng: random.Random,
        planned: list[FaultKind],
        args: argparse.Namespace,
    ) -> None:
        self.server = server
        self.rng = rng
        self.planned = planned
        # Gaps average 80% of an even spread, so that all fire before the queue is empty.
        self.mean_gap = 0.8 * args.messages / max(1, len(planned))
        self.fired: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fault-feeder", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> _DataFaultFeeder:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.server.clear_faults()  # an armed fault that never fired, and the RCPT ones
        if self.error is not None:
            raise RuntimeError("the fault feeder failed") from self.error

    def _run(self) -> None:
        try:
            for kind, stage, reply, action in self.planned:
                target = len(self.server.messages) + round(self.rng.uniform(0, 2 * self.mean_gap))
                while not self._reached(target):
                    pass
                if self.stop.is_set():
                    return
                fault = self.server.fault(stage, reply, action=action, times=1)
                while fault.fired == 0 and not self.stop.wait(0.002):
                    pass
                self.fired[kind] += fault.fired
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def _reached(self, target: int) -> bool:
        if self.stop.is_set():
            return True
        try:
            self.server.wait_for(target, timeout=0.05)
        except TimeoutError:
            return False
        return True


def _kill_phase(
    rng: random.Random, server: FaultySMTPServer, flushers: Flushers, args: argparse.Namespace
) -> int:
    """Run ``--flushers`` processes, killing one at random ``--kills`` times; then let
    the rest finish. Returns how many were killed while running."""
    running = [flushers.start() for _ in range(args.flushers)]
    kills = 0
    for _ in range(args.kills):
        running = [p for p in running if p.running]
        if not running:
            break  # nothing left that is due by the real clock
        victim = rng.choice(running)
        killed, _ = kill_at_random(
            rng,
            server,
            victim,
            max_deliveries=max(1, args.messages // (2 * args.kills)),
            max_delay=args.max_kill_delay,
        )
        kills += killed
        running.remove(victim)
        running.append(flushers.start())
    for process in running:
        code = process.wait(timeout=600)
        if code != 0:
            raise RuntimeError(f"a flusher exited {code}: {process.stderr()[-2000:]}")
    return kills


def _drain(url: str, smtp_port: int) -> int:
    """Flush in this process on a clock past every lease, then past each backoff, until
    nothing is ready, scheduled or in flight. Returns the number of rounds."""
    offset = LEASE + 1
    with _closing(make_store(url)) as store:
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp_port}?timeout=10")
        for rounds in range(1, MAX_DRAIN_ROUNDS + 1):
            clock = _ahead(offset)
            Flusher(store, transport, clock=clock).flush()
            stats = store.stats(clock())
            if stats.ready + stats.scheduled + stats.in_flight == 0:
                return rounds
            offset += LONGEST_BACKOFF
    raise RuntimeError(f"the queue was not drained in {MAX_DRAIN_ROUNDS} rounds: {stats}")


def _ahead(offset: float) -> Callable[[], float]:
    return lambda: time.time() + offset


def _tally(url: str, messages: int, server: FaultySMTPServer) -> Tally:
    with _closing(make_store(url)) as store:
        buried = buried_numbers(store)
    return Tally.count(messages, server.messages, server.dropped_after_dot, buried, _reason)


def _reason(reason: str) -> str:
    """A burial reason without what differs from message to message."""
    reason = re.sub(r"r\d+@example\.com", "<rcpt>", reason)
    return re.sub(r"after \d+ attempts over \d+s", "after N attempts", reason)


def report(outcome: Outcome) -> None:
    t = outcome.tally
    print(f"\n{outcome.label} ({outcome.elapsed:.0f} s, drained in {outcome.drain_rounds} rounds)")
    print(f"  messages      {t.messages}")
    print(f"  delivered     {t.delivered}")
    print(f"  lost          {t.lost}")
    print(
        f"  duplicated    {t.duplicated} ({t.duplicated_after_drop} after a drop after the "
        f"dot, {t.duplicated_other} from {outcome.kills} kills)"
    )
    print(f"  buried        {t.buried}")
    for reason, n in t.buried_reasons.most_common():
        print(f"    {n:6d}  {reason}")
    if t.reached_and_buried:
        print(f"    ({t.reached_and_buried} of them had reached the server once before)")
    fired = ", ".join(f"{kind} {n}" for kind, n in outcome.faults_fired.items()) or "none"
    print(f"  faults        {outcome.faults_planned} messages chosen; fired: {fired}")
    if not outcome.ok:
        print("  FAILED: a message was lost, or more duplicates than kills")


@contextmanager
def _closing(store: Store) -> Iterator[Store]:
    try:
        yield store
    finally:
        store.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
