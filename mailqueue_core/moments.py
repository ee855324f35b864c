"""Times as the console and the console commands say them: ``42s``, ``in 15m``, ``5h ago``.

One place, so that ``mailqueue list`` and the admin's pages never disagree about
what a message's time reads as. Needs no Django project.
"""

from __future__ import annotations

from mailqueue_core.browsing import Summary
from mailqueue_core.store import State

__all__ = ["relative", "span", "state_time"]


def span(seconds: float) -> str:
    """A duration, whole units, its sign dropped: 42s, 15m, 5h, 3d."""
    seconds = abs(seconds)
    for unit, size, up_to in (("s", 1, 100), ("m", 60, 100 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def relative(moment: float, now: float) -> str:
    """``moment`` seen from ``now``: "in 5m" or "5m ago"."""
    return f"in {span(moment - now)}" if moment > now else f"{span(now - moment)} ago"


def state_time(summary: Summary, now: float) -> str:
    """The time that matters in the message's state: "due in 5m", "lease ends in 4m",
    "lease ran out 12m ago", "buried 2h ago"."""
    if summary.state is State.DEAD:
        return "buried" if summary.buried is None else f"buried {relative(summary.buried, now)}"
    if summary.state in (State.IN_FLIGHT, State.STUCK):
        verb = "ends" if summary.state is State.IN_FLIGHT else "ran out"
        return f"lease {verb} {relative(summary.expires or now, now)}"
    return f"due {relative(summary.due, now)}"
