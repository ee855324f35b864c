"""Text that reaches a terminal, a log or a store from outside: made safe to show.

Recipients, SMTP replies and error reasons come from other people's servers.
Shown raw, a reply holding ``ESC[2J`` clears the operator's screen and a
newline forges a log line; stored whole, a refusal of 10,000 recipients makes a
half-megabyte error field. :func:`printable` escapes control characters,
:func:`cap` shortens a text and says how much it cut, and :func:`get_logger`
gives a logger whose records are escaped before any handler sees them.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MAX_ERROR", "cap", "duration", "get_logger", "printable"]

#: The longest error reason a store keeps (characters).
MAX_ERROR = 4000

# C0 and C1 control characters and DEL; tab is kept as whitespace people see.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char, f"\\x{ord(char):02x}")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_escape, text)


def cap(text: str, limit: int = MAX_ERROR) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"


class _Printable(logging.Filter):
    """Escapes control characters in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = printable(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: printable(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


_FILTER = _Printable()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, its records' control characters escaped."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d`` -> seconds; ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use seconds, or 90m, 12h, 7d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
