"""The reliability bench at a tiny size, so that it keeps working between full runs.

``python -m bench.reliability`` at 200 messages with faults and 3 kills, on both stores
(it starts its own redis-server): each reports nothing lost, and it exits 0.
"""

from __future__ import annotations

import re

import pytest

from bench import reliability


def test_reliability_bench_at_200_messages_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Only the scenario with faults: kills alone are the crash drills' job.
    args = ["--messages", "200", "--kills", "3", "--max-kill-delay", "0.3", "--seed", "7"]
    code = reliability.main([*args, "--scenarios", "faults+kills"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert len(re.findall(r"^  lost +0$", out, re.MULTILINE)) == 2, out
    assert len(re.findall(r"^  messages +200$", out, re.MULTILINE)) == 2, out
    assert "faults+kills" in out and "FAILED" not in out
