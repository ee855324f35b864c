"""What every measurement sends: a typical receipt, and the Django set-up to send it.

The message is the one the design's figures are for: a 1.5 KB text body and a 3 KB
HTML alternative, one recipient. Django is configured here with its defaults (no
project is needed for the queueing backend or the SMTP backend).
"""

from __future__ import annotations

import email.policy
import importlib
import importlib.util
from typing import Any

import django
from django.conf import settings
from django.core.mail import EmailMultiAlternatives

STORES = ("memory", "sqlite", "redis", "memcached")
FROM = "shop@example.com"

_TEXT_LINE = "Item {n:>3}: Widget, size M, colour blue ......... qty 1 .... 12.50 EUR\n"
_HTML_ROW = (
    "<tr><td>Item {n}</td><td>Widget, size M, colour blue</td><td>1</td><td>12.50</td></tr>\n"
)


def setup_django() -> None:
    if not settings.configured:
        settings.configure(EMAIL_BACKEND="mailqueue_core.backend.EmailBackend")
        django.setup()


def receipt(n: int) -> EmailMultiAlternatives:
    """Receipt number ``n``: about 1.5 KB of text and 3 KB of HTML."""
    text = f"Hello customer {n},\n\nthank you for your order {n:08d}.\n\n"
    text += "".join(_TEXT_LINE.format(n=i) for i in range(18))
    html = f"<html><body><p>Hello customer {n},</p><p>Order {n:08d}</p><table>\n"
    html += "".join(_HTML_ROW.format(n=i) for i in range(32)) + "</table></body></html>\n"
    message = EmailMultiAlternatives(
        f"Your receipt for order {n:08d}", text, FROM, [f"customer{n}@example.org"]
    )
    message.attach_alternative(html, "text/html")
    return message


def wire_bytes(message: EmailMultiAlternatives) -> bytes:
    """What Django's SMTP backend puts after DATA (its own rendering, per version)."""
    if django.VERSION >= (6, 0):
        return message.message(policy=email.policy.SMTP).as_bytes()  # type: ignore[call-arg]
    return message.message().as_bytes(linesep="\r\n")


def store_missing(name: str) -> str | None:
    """Why the store ``name`` cannot be measured here, or None when it can."""
    module = {"memcached": "mailqueue_stores.memcached", "redis": "mailqueue_stores.redis"}
    if name not in module:
        return None
    try:
        importlib.import_module(module[name])
    except ImportError:
        return "not available"
    return None


def peer_missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else "not installed"


def mean(values: list[Any]) -> float:
    return sum(values) / len(values) if values else 0.0
