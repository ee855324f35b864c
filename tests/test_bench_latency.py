"""The latency benchmark (bench/latency.py) runs, at a tiny size, and prints its table."""

from __future__ import annotations

import pytest

from bench import latency

pytestmark = pytest.mark.drill


def test_the_latency_benchmark_runs_tiny(capsys):
    latency.main(
        ["--messages", "5", "--gap", "0.01", "--stores", "memory,sqlite", "--interval", "0.5"]
    )
    out = capsys.readouterr().out
    for row in ("cron (computed)", "memory (wake)", "memory (poll)", "sqlite (wake)"):
        assert row in out


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        latency.main(["--stores", "oracle"])
    with pytest.raises(SystemExit):
        latency.main(["--modes", "psychic"])
