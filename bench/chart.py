"""The benchmark's chart (``--chart PATH``): four panels from one run's results.

Needs matplotlib (``pip install mailqueue[bench]``); only asked for by ``--chart``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.workload import STORES


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _enqueue(axes[0][0], results["enqueue"])
    _flush(axes[0][1], results["flush"])
    _depth(axes[1][0], results["depth"])
    _scale(axes[1][1], results["scale"])
    meta = results["meta"]
    fig.suptitle(
        f"mailqueue benchmark, {meta['date']}: {meta['cpu']} x{meta['nproc']}, "
        f"Python {meta['python']}, Django {meta['django']}",
        fontsize=12,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _barh(ax: Any, labels: list[str], values: list[float], colors: list[str], fmt: str) -> None:
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    for y, v in enumerate(values):
        ax.annotate(" " + fmt.format(v), (v, y), va="center", fontsize=8)
    ax.set_xlim(right=max(values) * 1.25)


def _enqueue(ax: Any, enq: dict[str, Any]) -> None:
    labels, values, colors = [], [], []
    for store in (*STORES, "sqlite NORMAL"):
        for name, color in ((store, "tab:blue"), (f"{store} floor", "tab:gray")):
            if "p50_ms" in enq.get(name, {}):
                labels.append(name)
                values.append(enq[name]["p50_ms"])
                colors.append(color)
    for name in ("django-mailer", "django-post_office", "Django SMTP backend"):
        if "p50_ms" in enq.get(name, {}):
            labels.append(name)
            values.append(enq[name]["p50_ms"])
            colors.append("tab:orange")
    _barh(ax, labels, values, colors, "{:.2f}")
    ax.set_title("Enqueue: ms per message, p50 (lower is better)")


def _flush(ax: Any, flush: dict[str, Any]) -> None:
    rows = [(n, r) for n, r in flush.items() if "rate" in r and not n.startswith("smtp-sink")]
    colors = [
        "tab:gray"
        if n.startswith("limit")
        else "tab:orange"
        if n.startswith("django")
        else "tab:blue"
        for n, _ in rows
    ]
    _barh(ax, [n for n, _ in rows], [r["rate"] for _, r in rows], colors, "{:,.0f}")
    ax.set_title("Flush: messages/s to the aiosmtpd sink (higher is better)")


def _depth(ax: Any, depth: dict[str, Any]) -> None:
    for store, runs in depth.items():
        if isinstance(runs, list):
            ax.plot([r["depth"] for r in runs], [r["claim_ms"] for r in runs], "o-", label=store)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("messages in the queue")
    ax.set_ylabel("ms to claim 100")
    ax.set_title("Claim cost against queue depth (flat is the goal)")
    ax.legend()


def _scale(ax: Any, scale: dict[int, Any]) -> None:
    workers = sorted(scale)
    labels = [f"{w} worker(s)" for w in workers]
    ax.bar(labels, [scale[w]["rate"] for w in workers], color="tab:blue", label="msg/s")
    ax.set_ylabel("messages/s")
    twin = ax.twinx()
    twin.plot(
        labels,
        [scale[w]["sender_cpu"] for w in workers],
        "s-",
        color="tab:red",
        label="sender CPU (cores)",
    )
    twin.plot(
        labels,
        [scale[w]["sink_cpu"] for w in workers],
        "^-",
        color="tab:green",
        label="sink CPU (cores)",
    )
    twin.set_ylim(bottom=0)
    twin.set_ylabel("cores busy")
    twin.legend(loc="upper left")
    ax.set_title("Scale-out: flusher processes on one Redis queue")
