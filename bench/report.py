"""The one table a run prints, and the targets it checks, from the run's results.

``results`` is the dict :mod:`bench.__main__` fills: ``enqueue``, ``flush``,
``scale``, ``depth``, ``size`` (missing subjects hold ``{"missing": why}``).
"""

from __future__ import annotations

from typing import Any

from bench.workload import STORES

Row = list[str]
HEADER = ["section", "subject", "result", "compared", "CPU sender / sink", "note"]
CORES_BUSY = 0.85  # of all cores, or of the sink's one core: that is the bottleneck


def _ms(row: dict[str, Any]) -> str:
    return f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fmt(ratio: float | None, what: str) -> str:
    return "" if ratio is None else f"{ratio:.2f}x {what}"


def enqueue_rows(enq: dict[str, Any]) -> list[Row]:
    rows = []
    for store in ENQUEUE_SUBJECTS:
        own, floor = enq.get(store), enq.get(f"{store} floor", {})
        if own is None:
            continue
        if "missing" in own:
            rows.append(["enqueue", store, own["missing"], "", "", ""])
            continue
        compared = _fmt(_ratio(own["p50_ms"], floor.get("p50_ms")), "its floor")
        rows.append(["enqueue", store, _ms(own), compared, "", "queueing backend"])
        rows.append(["enqueue", f"{store} floor", _ms(floor), "", "", _FLOOR_NOTES[store]])
    for name in ("Django SMTP backend", "django-mailer", "django-post_office"):
        row = enq.get(name, {"missing": "not measured"})
        if "missing" in row:
            rows.append(["enqueue", name, row["missing"], "", "", ""])
        else:
            note = "sends at once, new connection" if name.startswith("Django") else "its backend"
            rows.append(["enqueue", name, _ms(row), "", "", note])
    return rows


_FLOOR_NOTES = {
    "memory": "encode + dict insert",
    "sqlite": "encode + INSERT + COMMIT",
    "redis": "encode + SET",
    "memcached": "encode + set",
    "sqlite NORMAL": "encode + INSERT + COMMIT, NORMAL",
}


def _rate(row: dict[str, Any]) -> str:
    return f"{row['rate']:,.0f} msg/s"


def _cpu(row: dict[str, Any]) -> str:
    # CPU per message is the figure that other people's load on the machine distorts least.
    return (
        f"{row['sender_cpu']:.2f} / {row['sink_cpu']:.2f} cores, "
        f"{row['sender_us']:,.0f} / {row['sink_us']:,.0f} us/msg"
    )


ENQUEUE_SUBJECTS = (*STORES, "sqlite NORMAL")


def flush_rows(flush: dict[str, Any]) -> list[Row]:
    rows = []
    limit1 = flush.get("limit, 1 connection", {}).get("rate")
    limit2 = flush.get("limit, 2 connections", {}).get("rate")
    for name, row in flush.items():
        if "missing" in row:
            rows.append(["flush", name, row["missing"], "", "", ""])
            continue
        base = limit2 if ("2 workers" in name or "2 connections" in name) else limit1
        compared = "" if name.startswith("limit") else _fmt(_ratio(row["rate"], base), "limit")
        note = row.get("note", "")
        rows.append(["flush", name, _rate(row), compared, _cpu(row), note])
    return rows


def bottleneck(row: dict[str, Any], cores: int) -> str:
    if row["sink_cpu"] >= CORES_BUSY:
        return "the sink (its one core busy)"
    busy = row.get("machine_busy") or 0.0
    if busy >= CORES_BUSY:
        return f"the cores ({busy:.0%} of {cores} busy, all processes)"
    return f"neither ({busy:.0%} of {cores} cores busy): waits"


def scale_rows(scale: dict[int, Any], cores: int) -> list[Row]:
    rows = []
    base = scale.get(1, {}).get("rate")
    for workers, row in sorted(scale.items()):
        compared = _fmt(_ratio(row["rate"], base), "one worker")
        rows.append(
            [
                "scale-out",
                f"redis, {workers} worker(s)",
                _rate(row),
                compared,
                _cpu(row),
                f"bottleneck: {bottleneck(row, cores)}",
            ]
        )
    return rows


def depth_rows(depth: dict[str, Any]) -> list[Row]:
    rows = []
    for store, runs in depth.items():
        if isinstance(runs, dict):
            rows.append(["claim", store, runs["missing"], "", "", ""])
            continue
        for run in runs:
            ratio = run["claim_ms"] / runs[0]["claim_ms"]
            rows.append(
                [
                    "claim",
                    f"{store}, depth {run['depth']:,}",
                    f"{run['claim_ms']:.3f} ms / 100",
                    _fmt(ratio, f"depth {runs[0]['depth']:,}"),
                    "",
                    "",
                ]
            )
    return rows


def size_rows(size: dict[str, Any]) -> list[Row]:
    message = size["message"]
    record = message["record"]
    rows = [
        ["size", "record (JSON)", f"{record:,.0f} B", "", "", "what a store keeps"],
        ["size", "rendered message", f"{message['rendered']:,.0f} B", "", "", "what SMTP carries"],
    ]
    for store, key, note in (
        ("redis", "memory_usage", "MEMORY USAGE, hash + share of sets"),
        ("redis", "used_memory", "used_memory growth"),
        ("memcached", "bytes", "stats bytes growth"),
        ("sqlite", "file", "file growth after checkpoint"),
    ):
        got = size.get(store)
        if got is None or "missing" in got:
            if key != "used_memory":
                why = (got or {}).get("missing", "not measured")
                rows.append(["size", store, why, "", "", ""])
            continue
        rows.append(
            ["size", store, f"{got[key]:,.0f} B/msg", _fmt(got[key] / record, "record"), "", note]
        )
    return rows


def targets(results: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """(what, measured ratio, bound, 'min'|'max') for every target of the issue."""
    enq, flush = results["enqueue"], results["flush"]
    out: list[tuple[str, float | None, float, str]] = []

    def p50(name: str) -> float | None:
        return enq.get(name, {}).get("p50_ms")

    for store in ENQUEUE_SUBJECTS:
        if p50(store) is None:
            continue
        out.append(
            (f"enqueue {store} / its floor", _ratio(p50(store), p50(f"{store} floor")), 1.5, "max")
        )
        bound = 3.0 if store in ("sqlite", "sqlite NORMAL", "memory") else 1.0
        out.append(
            (
                f"django-mailer enqueue / {store}",
                _ratio(p50("django-mailer"), p50(store)),
                bound,
                "min",
            )
        )
        out.append(
            (
                f"Django SMTP direct / {store}",
                _ratio(p50("Django SMTP backend"), p50(store)),
                10.0,
                "min",
            )
        )
    limit1 = flush.get("limit, 1 connection", {}).get("rate")
    limit2 = flush.get("limit, 2 connections", {}).get("rate")
    post = flush.get("django-post_office send_queued", {}).get("rate")
    for store in STORES:
        one = flush.get(f"{store}, 1 worker", {}).get("rate")
        if one is None:
            continue
        out.append((f"flush {store} 1 worker / limit 1 conn", _ratio(one, limit1), 0.85, "min"))
        out.append((f"flush {store} 1 worker / post_office", _ratio(one, post), 1.0, "min"))
        two = flush.get(f"{store}, 2 workers", {}).get("rate")
        if two is not None:
            out.append(
                (f"flush {store} 2 workers / limit 2 conn", _ratio(two, limit2), 0.8, "min")
            )
    for store, runs in results["depth"].items():
        if isinstance(runs, list) and len(runs) > 1:
            ratio = runs[-1]["claim_ms"] / runs[0]["claim_ms"]
            what = f"claim {store} depth {runs[-1]['depth']:,} / {runs[0]['depth']:,}"
            out.append((what, ratio, 2.0, "max"))
    redis = results["size"].get("redis")
    if redis and "missing" not in redis:
        out.append(
            (
                "redis MEMORY USAGE / record",
                redis["memory_usage"] / results["size"]["message"]["record"],
                1.5,
                "max",
            )
        )
    return out


def target_rows(results: dict[str, Any]) -> list[Row]:
    rows = []
    for what, ratio, bound, kind in targets(results):
        if ratio is None:
            rows.append(
                [
                    "target",
                    what,
                    "not measured",
                    f"{'>=' if kind == 'min' else '<='} {bound}",
                    "",
                    "peer not installed",
                ]
            )
            continue
        met = ratio >= bound if kind == "min" else ratio <= bound
        rows.append(
            [
                "target",
                what,
                f"{ratio:.2f}",
                f"{'>=' if kind == 'min' else '<='} {bound}",
                "",
                "met" if met else "MISSED",
            ]
        )
    return rows


def table(results: dict[str, Any]) -> list[Row]:
    cores = results["meta"]["nproc"]
    rows = enqueue_rows(results["enqueue"]) + flush_rows(results["flush"])
    rows += scale_rows(results["scale"], cores) + depth_rows(results["depth"])
    rows += size_rows(results["size"]) + target_rows(results)
    return rows


def render_text(rows: list[Row], header: Row = HEADER) -> str:
    """The table as text, a rule between groups (the first column changes)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "+".join("-" * (w + 2) for w in widths)
    lines = [_line(header, widths), rule]
    for i, row in enumerate(rows):
        if i and row[0] != rows[i - 1][0]:
            lines.append(rule)
        lines.append(_line(row, widths))
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int]) -> str:
    return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def render_rst(rows: list[Row], header: Row = HEADER) -> str:
    """The same table as a reStructuredText grid table, for docs/benchmarks.rst."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = border.replace("-", "=")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [border, line(header), head]
    for row in rows:
        out += [line(row), border]
    return "\n".join(out)
