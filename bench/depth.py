"""Claim cost against queue depth, for redis and sqlite, through :mod:`bench.claim_depth`.

The measurement is claim_depth's own (``measure``: top the queue up to each
depth, claim a batch of 100 due messages ``runs`` times, median); this module
only points it at the servers of this run and returns the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

from bench import claim_depth
from mailqueue_core.plugins import make_store


def claim_costs(
    store: str, url: str, depths: list[int], runs: int, directory: Path
) -> list[dict[str, Any]]:
    if store == "sqlite":
        url = f"sqlite:///{directory / 'depth.db'}"
    options = argparse.Namespace(record_size=1024, runs=runs, batch=100)
    with make_store(url, namespace="depth") as queue, contextlib.redirect_stdout(io.StringIO()):
        rows = claim_depth.measure(queue, depths, options, lambda depth, ids: {})
    if store == "redis":
        import redis

        # The run's own server: drop the million records before the next section.
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    return rows
