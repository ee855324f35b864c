"""The console benchmark (``python -m bench console``) runs end to end at a tiny size.

As in test_bench_smoke.py, no figure is checked: only that one run of 2,000
messages fills each store, times every read and prints the table, and that a
store which does not list its records says so instead of failing the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailqueue_core.store import Capability, State, Store
from mailqueue_stores.memory import MemoryStore
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.sqlite import SQLiteStore

pytestmark = pytest.mark.drill

ROOT = Path(__file__).resolve().parent.parent
STORES: dict[str, type[Store]] = {
    "memory": MemoryStore,
    "sqlite": SQLiteStore,
    "redis": RedisStore,
}
SUBJECTS = (
    "limit: ",
    "first page, ready",
    "first page, newest first, dead",
    "first page, stuck",
    "walk of ",
    "deep page, ready",
    "pages of 1,000 to the middle",
    "get, random id",
    "fill",
)


def _run(*options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "bench", "console", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_tiny_console_benchmark_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    done = _run("--tiny", "--stores", ",".join(STORES), "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mailqueue console benchmark, ")
    assert "2,000 messages" in lines[0]
    results = json.loads(out.read_text())["stores"]
    for name, cls in STORES.items():
        rows = [line for line in lines if line.startswith(f"{name} ")]
        if Capability.BROWSE not in cls.capabilities:
            assert results[name] == {
                "missing": f"{cls.__name__} does not declare the 'browse' capability (yet)"
            }
            assert len(rows) == 1 and "'browse' capability" in rows[0]
            continue
        for subject in SUBJECTS:
            assert any(f"| {subject}" in row for row in rows), (name, subject)
        got = results[name]
        counts = got["fill"]["counts"]
        assert sum(counts.values()) == 2_000, counts
        assert counts[State.IN_FLIGHT.value] == counts[State.STUCK.value] == 20, counts
        assert counts[State.SCHEDULED.value] == counts[State.DEAD.value] == 20, counts
        for state in State:
            expected = 50 if state is State.READY else 20
            assert got[f"first page, {state.value}"]["entries"] == expected, state
            assert got[f"newest page, {state.value}"]["entries"] == expected, state
        assert got["walk"]["walked"] == 20 * 50
        assert got["deep"]["at"] >= counts[State.READY.value] // 2


def test_a_bad_size_or_store_is_refused() -> None:
    done = _run("--messages", "10", "--stores", "memory")
    assert done.returncode != 0
    assert "--messages: at least 1000" in done.stderr
    done = _run("--stores", "memory,memcached")
    assert done.returncode != 0
    assert "--stores: unknown memcached" in done.stderr
