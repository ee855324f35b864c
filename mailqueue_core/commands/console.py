"""``list``, ``show``, ``send-now``, ``delete``, ``pause`` and ``resume``: the console's verbs.

They need a store that declares the ``browse`` capability (``pause`` and
``resume``: ``pause``); with one that lacks it they exit 1 with one line naming
the store and what it lacks. Like ``status``, they open an existing queue only.
What they print of a message is decoded by :mod:`mailqueue_core.browsing` and
printed through :func:`~mailqueue_core.commands.output.say`, control characters
escaped (a subject or an HTML body cannot drive the operator's terminal).

``send-now`` and ``delete`` exit 1 when a message they were given was left as
it was (unknown, in flight, or, for ``send-now``, dead), naming each on stderr;
a message ``send-now`` finds already due is not one of those.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import time
from collections.abc import Iterable
from typing import Any, TextIO

from mailqueue_core.browsing import BUDGET, Summary, search, search_sent, summarize
from mailqueue_core.commands.arguments import positive_int
from mailqueue_core.commands.inspect import _existing
from mailqueue_core.commands.output import say
from mailqueue_core.config import Config
from mailqueue_core.moments import relative, span, state_time
from mailqueue_core.store import Capability, Entry, SentRecord, State, Store

__all__ = [
    "add_delete_arguments",
    "add_list_arguments",
    "add_pause_arguments",
    "add_send_now_arguments",
    "add_show_arguments",
    "delete",
    "list_messages",
    "pause",
    "resume",
    "send_now",
    "show",
]

#: How many records ``send-now --all-scheduled`` takes from the store at a time.
PAGE = 500

_LACKS = {
    Capability.BROWSE: "list its messages or act on single ones",
    Capability.PAUSE: "pause delivery",
    Capability.SENT_LOG: "keep a log of sent mail",
}


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        required=True,
        choices=[*(state.value for state in State), "sent"],
        help="which messages: ready (due now), scheduled (waiting for a later time), "
        "in-flight (held by a flusher), stuck (held past the lease), dead, or sent "
        "(the sent log, newest first, when SENT_LOG is on) (required)",
    )
    parser.add_argument(
        "--search",
        metavar="TEXT",
        help="only messages with TEXT in a recipient, the subject, the Message-ID or the "
        "queue id, in any case (default: every message)",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="list at most N"
    )
    parser.add_argument(
        "--newest", action="store_true", help="newest first (default: oldest first)"
    )
    parser.add_argument(
        "--cursor",
        metavar="C",
        help="go on where the previous page stopped, as its last line says "
        "(default: the first page)",
    )
    parser.add_argument(
        "--budget",
        type=positive_int,
        default=BUDGET,
        metavar="N",
        help="with --search: read at most N messages, then stop with a cursor to go on",
    )
    parser.add_argument(
        "--json", action="store_true", help='print one JSON object: {"entries": [...], ...}'
    )


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the queue id, as 'list' and 'dead' show it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_send_now_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="queue ids of scheduled messages")
    parser.add_argument("--all-scheduled", action="store_true", help="every scheduled message")


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids", nargs="+", metavar="ID", help="queue ids of queued messages or dead letters"
    )


def add_pause_arguments(parser: argparse.ArgumentParser) -> None:
    """``pause`` and ``resume`` take no options of their own."""


def _open(conf: Config, capability: Capability, command: str, stderr: TextIO) -> Store | None:
    """The existing store, or None (having said why) when it lacks ``capability``."""
    store = _existing(conf)
    if capability in store.capabilities:
        return store
    store.close()
    say(
        stderr,
        f"mailqueue {command}: {type(store).__name__} cannot {_LACKS[capability]} "
        f"(it lacks the '{capability.value}' capability)",
    )
    return None


# -- list ------------------------------------------------------------------------------


def list_messages(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if options.state == "sent":
        return _list_sent(options, conf, stdout, stderr)
    state = State(options.state)
    store = _open(conf, Capability.BROWSE, "list", stderr)
    if store is None:
        return 1
    now = time.time()
    examined: int | None = None
    try:
        if options.search is None:
            page = store.browse(
                state, now, limit=options.limit, cursor=options.cursor, newest_first=options.newest
            )
            summaries = [summarize(entry) for entry in page.entries]
            cursor = page.cursor
        else:
            found = search(
                store,
                state,
                now,
                options.search,
                limit=options.limit,
                cursor=options.cursor,
                budget=options.budget,
                newest_first=options.newest,
            )
            summaries, cursor, examined = found.matches, found.cursor, found.examined
    except ValueError as exc:
        say(stderr, f"mailqueue list: --cursor is not one this queue gave: {exc}")
        return 1
    finally:
        store.close()
    return _report(
        options,
        stdout,
        [summary.as_dict() for summary in summaries],
        [_line(summary, now) for summary in summaries],
        cursor,
        examined,
        (f"no {state.value} messages", "message(s)"),
    )


def _report(
    options: argparse.Namespace,
    stdout: TextIO,
    rows: list[dict[str, Any]],
    lines: list[str],
    cursor: str | None,
    examined: int | None,
    words: tuple[str, str],
) -> int:
    """Print one page of ``list``: JSON, or a line each and the next page's command.
    ``words``: what an empty page says, and what ``examined`` counts."""
    if options.json:
        doc: dict[str, Any] = {"entries": rows, "cursor": cursor}
        if examined is not None:
            doc["examined"] = examined
        say(stdout, json.dumps(doc))  # JSON escapes control characters itself
        return 0
    nothing, counted = words
    if not lines:
        matching = "" if options.search is None else f" with {options.search!r}"
        say(stdout, f"{nothing}{matching}")
    for line in lines:
        say(stdout, line)
    if examined is not None:
        say(stdout, f"{len(lines)} found among {examined} {counted} read")
    if cursor is not None:
        say(stdout, f"next page: {_next_page(options, cursor)}")
    return 0


def _list_sent(options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO) -> int:
    store = _open(conf, Capability.SENT_LOG, "list", stderr)
    if store is None:
        return 1
    now = time.time()
    examined: int | None = None
    try:
        if options.search is None:
            page = store.sent_log(now, limit=options.limit, cursor=options.cursor)
            records, cursor = page.entries, page.cursor
        else:
            found = search_sent(
                store,
                now,
                options.search,
                limit=options.limit,
                cursor=options.cursor,
                budget=options.budget,
            )
            records, cursor, examined = found.matches, found.cursor, found.examined
    except ValueError as exc:
        say(stderr, f"mailqueue list: --cursor is not one this queue gave: {exc}")
        return 1
    finally:
        store.close()
    rows = [
        {**dataclasses.asdict(r), "recipients": list(r.recipients), "data": None} for r in records
    ]
    return _report(
        options,
        stdout,
        rows,
        [_sent_line(record, now) for record in records],
        cursor,
        examined,
        ("no sent messages logged", "logged message(s)"),
    )


def _sent_line(record: SentRecord, now: float) -> str:
    provider = f"  provider id {record.provider_id}" if record.provider_id else ""
    return (
        f"{record.id}  sent {relative(record.sent, now)}  to "
        f"{_recipients(record.recipients)}  subject {_short(record.subject)!r}  "
        f"{record.message_id or '(no Message-ID)'}  via {record.transport or '?'}  "
        f"attempts {record.attempts}{provider}"
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _recipients(recipients: Iterable[str], shown: int = 3) -> str:
    listed = list(recipients)
    if not listed:
        return "?"
    more = f" (+{len(listed) - shown} more)" if len(listed) > shown else ""
    return ", ".join(listed[:shown]) + more


def _line(summary: Summary, now: float) -> str:
    mark = " [LOST]" if summary.lost else " [DAMAGED]" if summary.damage else ""
    parts = [
        f"{summary.id}{mark}",
        state_time(summary, now),
        f"age {span(now - summary.created)}",
        f"to {_recipients(summary.recipients)}",
        f"subject {_short(summary.subject)!r}",
        f"attempts {summary.attempts}",
    ]
    problem = summary.damage or summary.reason or summary.last_error
    if problem:
        parts.append(f"error {_short(problem)!r}")
    return "  ".join(parts)


def _next_page(options: argparse.Namespace, cursor: str) -> str:
    # Only the standalone command has --store; its global options are left out
    # (a store URL may hold a password): the reader adds their own.
    command = "mailqueue" if hasattr(options, "store") else "python manage.py mailqueue"
    args = ["list", "--state", options.state]
    if options.search is not None:
        args += ["--search", options.search]
    if options.limit != 50:
        args += ["--limit", str(options.limit)]
    if options.newest:
        args.append("--newest")
    return f"{command} {shlex.join([*args, '--cursor', cursor])}"


# -- show -------------------------------------------------------------------------------


def show(options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any) -> int:
    store = _open(conf, Capability.BROWSE, "show", stderr)
    if store is None:
        return 1
    now = time.time()
    try:
        entry = store.get(options.id, now)
    finally:
        store.close()
    if entry is None:
        say(stderr, f"mailqueue show: no message {options.id!r} in the queue or the dead letters")
        return 1
    summary = summarize(entry, detail=True)
    if options.json:
        say(stdout, json.dumps(summary.as_dict(detail=True)))
        return 0
    say(stdout, *_details(summary, now))
    return 0


def _timestamp(moment: float, now: float) -> str:
    utc = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC ({relative(moment, now)})"


def _details(summary: Summary, now: float) -> list[str]:
    rows: list[tuple[str, str]] = [
        ("id", summary.id),
        ("state", summary.state.value + (" (lost by the store)" if summary.lost else "")),
        ("from", summary.sender or "?"),
        ("to", ", ".join(summary.recipients) or "?"),
        ("subject", repr(summary.subject)),
        ("message-id", summary.message_id or "-"),
        ("size", f"{summary.size} bytes"),
        ("attempts", str(summary.attempts)),
        ("created", _timestamp(summary.created, now)),
    ]
    if summary.state in (State.READY, State.SCHEDULED):
        rows.append(("due", _timestamp(summary.due, now)))
    if summary.expires is not None:
        rows.append(("lease ends", _timestamp(summary.expires, now)))
    if summary.buried is not None:
        rows.append(("buried", _timestamp(summary.buried, now)))
    if summary.reason:
        rows.append(("reason", summary.reason))
    if summary.last_error:
        rows.append(("last error", summary.last_error))
    if summary.damage:
        rows.append(("damage", summary.damage))
    lines = [f"{name:<13}{value}" for name, value in rows]
    if summary.headers:
        lines += ["", "headers:", *(f"    {name}: {value}" for name, value in summary.headers)]
    for title, body in (("text body", summary.text), ("HTML body (source)", summary.html)):
        if body is not None:
            lines += ["", f"{title}:", *(f"    {line}" for line in _lines(body))]
    if summary.attachments:
        lines += ["", "attachments:"]
        for attachment in summary.attachments:
            size = "?" if attachment.size is None else f"{attachment.size} bytes"
            name = attachment.filename or "(no name)"
            lines.append(f"    {name}  {attachment.content_type}  {size}")
    return lines


def _lines(body: str) -> list[str]:
    """A body's lines; every other control character is left for ``say`` to escape."""
    return body.replace("\r\n", "\n").split("\n")


# -- send-now, delete -------------------------------------------------------------------


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _sort(store: Store, ids: Iterable[str], now: float) -> dict[str, Entry | None]:
    return {mid: store.get(mid, now) for mid in _unique(ids)}


_HELD = {
    State.IN_FLIGHT: "in flight: a flusher holds it and may be sending it now",
    State.STUCK: "held past its lease by a flusher that stopped; the next flush takes it back",
}


def send_now(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if options.all_scheduled == bool(options.ids):
        say(stderr, "mailqueue send-now: give either --all-scheduled or message ids")
        return 1
    store = _open(conf, Capability.BROWSE, "send-now", stderr)
    if store is None:
        return 1
    now = time.time()
    try:
        if options.all_scheduled:
            changed = _send_all_scheduled(store, now)
            say(stdout, f"made {changed} message(s) due now")
            return 0
        entries = _sort(store, options.ids, now)
        waiting = [mid for mid, entry in entries.items() if _state(entry) is State.SCHEDULED]
        changed = store.send_now(waiting, now) if waiting else 0
    finally:
        store.close()
    say(stdout, f"made {changed} message(s) due now")
    refused = []
    for mid, entry in entries.items():
        state = _state(entry)
        if state is State.READY:
            say(stdout, f"{mid}: already due")
        elif state is None:
            refused.append(f"{mid}: no such message")
        elif state is State.DEAD:
            refused.append(f"{mid}: a dead letter ('retry' sends it again)")
        elif state is not State.SCHEDULED:
            refused.append(f"{mid}: {_HELD[state]}")
    if changed < len(waiting):
        refused.append(
            f"{len(waiting) - changed} of the scheduled message(s) changed meanwhile "
            "(claimed or deleted) and were left as they were"
        )
    say(stderr, *(f"mailqueue send-now: {line}" for line in refused))
    return 1 if refused else 0


def _state(entry: Entry | None) -> State | None:
    return None if entry is None else entry.state


def _send_all_scheduled(store: Store, now: float) -> int:
    """Every scheduled message made due, a page at a time."""
    changed = 0
    cursor: str | None = None
    while True:
        page = store.browse(State.SCHEDULED, now, limit=PAGE, cursor=cursor)
        if page.entries:
            changed += store.send_now([entry.id for entry in page.entries], now)
        if page.cursor is None:
            return changed
        cursor = page.cursor


def delete(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _open(conf, Capability.BROWSE, "delete", stderr)
    if store is None:
        return 1
    now = time.time()
    try:
        entries = _sort(store, options.ids, now)
        doomed = [
            mid
            for mid, entry in entries.items()
            if entry is not None and entry.state is not State.IN_FLIGHT
        ]
        count = store.delete(doomed, now) if doomed else 0
    finally:
        store.close()
    say(stdout, f"deleted {count} message(s)")
    refused = []
    for mid, entry in entries.items():
        if entry is None:
            refused.append(f"{mid}: no such message")
        elif entry.state is State.IN_FLIGHT:
            until = (
                ""
                if entry.expires is None
                else f" (its lease ends {relative(entry.expires, now)})"
            )
            refused.append(f"{mid}: kept, {_HELD[State.IN_FLIGHT]}{until}")
    if count < len(doomed):
        refused.append(
            f"{len(doomed) - count} message(s) changed meanwhile (claimed by a flusher, or "
            "gone) and were not deleted"
        )
    say(stderr, *(f"mailqueue delete: {line}" for line in refused))
    return 1 if refused else 0


# -- pause, resume -----------------------------------------------------------------------


def _set_paused(conf: Config, paused: bool, command: str, stderr: TextIO) -> bool:
    store = _open(conf, Capability.PAUSE, command, stderr)
    if store is None:
        return False
    try:
        store.set_paused(paused)
    finally:
        store.close()
    return True


def pause(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if not _set_paused(conf, True, "pause", stderr):
        return 1
    say(
        stdout,
        "delivery paused: flushers hold delivery until 'resume' (the site still queues "
        "mail meanwhile)",
    )
    return 0


def resume(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if not _set_paused(conf, False, "resume", stderr):
        return 1
    say(stdout, "delivery resumed: the next flush delivers what is due")
    return 0
