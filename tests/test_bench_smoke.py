"""The benchmark runs, end to end, at a tiny size, so that it cannot rot.

No figure is checked (speed is measured only in bench/, never asserted in tests):
only that one run starts its servers, measures every section and prints the
table. The peers and matplotlib are not needed: peers are skipped and no chart
is asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.drill

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("enqueue", "flush", "scale-out", "claim", "size", "target")


def test_tiny_benchmark_prints_its_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the benchmark configures Django itself
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--skip-peers", "--json", str(tmp_path / "r")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mailqueue benchmark, ")
    sections = {line.split("|", 1)[0].strip() for line in lines[1:] if "|" in line}
    assert set(SECTIONS) <= sections, sections
    for subject in (
        "memory floor",
        "sqlite floor",
        "redis floor",
        "Django SMTP backend",
        "limit, 1 connection",
        "limit, 2 connections",
        "redis, 4 worker(s)",
        "redis, depth 1,000",
        "sqlite, depth 1,000",
    ):
        assert any(f"| {subject} " in line for line in lines), subject
    assert any("django-mailer" in line and "skipped" in line for line in lines)
    assert (tmp_path / "r").exists()
