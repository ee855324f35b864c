"""mailqueue_core.browsing: what the console shows of a message, and search a page at a time."""

from __future__ import annotations

import dataclasses
import email.message
import uuid

import pytest
from django.core.mail import EmailMultiAlternatives

from mailqueue_core import browsing, codec
from mailqueue_core.browsing import AttachmentInfo, Summary, search, summarize
from mailqueue_core.convert import capture
from mailqueue_core.message import MimePart, Part
from mailqueue_core.store import Entry, Record, State
from mailqueue_stores.memory import MemoryStore
from tests.helpers import message, record

NOW = 1_800_000_000.0


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def _entry(rec: Record, state: State = State.READY, **fields: object) -> Entry:
    return Entry(rec, state, **fields)  # type: ignore[arg-type]


# -- summarize ----------------------------------------------------------------------------


def test_a_summary_holds_the_envelope_and_the_delivery_state() -> None:
    msg = message("a@example.com", "b@example.com", created=NOW - 60, subject="Receipt")
    rec = dataclasses.replace(codec.to_record(msg), attempts=2, last_error="421 later")
    summary = summarize(_entry(rec, State.SCHEDULED))
    assert summary.id == rec.id and summary.state is State.SCHEDULED
    assert summary.sender == "site@example.com"
    assert summary.recipients == ("a@example.com", "b@example.com")
    assert summary.subject == "Receipt" and summary.message_id == msg.message_id
    assert summary.size == rec.size and summary.attempts == 2
    assert summary.last_error == "421 later" and summary.damage is None and not summary.lost
    assert (summary.created, summary.due) == (NOW - 60, NOW - 60)
    # Without detail, nothing of the content is read.
    assert summary.headers == () and summary.text is None and summary.attachments == ()
    assert "headers" not in summary.as_dict()
    assert summary.as_dict()["state"] == "scheduled"
    assert summary.as_dict()["recipients"] == ["a@example.com", "b@example.com"]


def _rich() -> EmailMultiAlternatives:
    mail = EmailMultiAlternatives(
        "Your order",
        "Thanks\r\nfor your order",
        "Shop <shop@example.com>",
        ["to@example.com"],
        bcc=["hidden@example.com"],
        cc=["cc@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Order": "42"},
    )
    mail.attach_alternative("<p>Thanks</p>", "text/html")
    mail.attach("report.pdf", b"%PDF-1.4 ...", "application/pdf")
    mail.attach("notes.txt", "h\u00e9llo", "text/plain")
    mail.attach(("utf-8", "", "r\u00e9sum\u00e9.txt"), "text", "text/plain")
    return mail


def test_detail_has_headers_bodies_and_attachments_never_their_content() -> None:
    rec = codec.to_record(capture(_rich()))
    summary = summarize(_entry(rec), detail=True)
    headers = dict(summary.headers)
    assert headers["From"] == "Shop <shop@example.com>"
    assert headers["To"] == "to@example.com" and headers["Cc"] == "cc@example.com"
    assert headers["Reply-To"] == "help@example.com" and headers["Subject"] == "Your order"
    assert headers["X-Order"] == "42" and "Message-ID" in headers and "Date" in headers
    assert "Bcc" not in headers
    assert "hidden@example.com" in summary.recipients  # the envelope still has it
    assert summary.text == "Thanks\r\nfor your order" and summary.html == "<p>Thanks</p>"
    assert summary.attachments == (
        AttachmentInfo("report.pdf", "application/pdf", 12),
        AttachmentInfo("notes.txt", "text/plain", 6),
        AttachmentInfo("r\u00e9sum\u00e9.txt", "text/plain", 4),
    )
    doc = summary.as_dict(detail=True)
    assert doc["attachments"][0] == {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "size": 12,
    }
    assert ["X-Order", "42"] in doc["headers"] and doc["html"] == "<p>Thanks</p>"


def test_an_html_only_message_has_no_text_body() -> None:
    mail = _rich()
    mail.content_subtype = "html"
    mail.body = "<b>only html</b>"
    mail.alternatives = [("plain as an alternative", "text/plain")]
    summary = summarize(_entry(codec.to_record(capture(mail))), detail=True)
    assert summary.html == "<b>only html</b>" and summary.text == "plain as an alternative"


def _mime_attachment() -> MimePart:
    part = email.message.EmailMessage()
    part.set_content(b"\x89PNG....", maintype="image", subtype="png", filename="logo.png")
    return MimePart(part.as_bytes())


def test_attachments_of_every_kind_the_codec_keeps() -> None:
    inner = message("x@example.com", created=NOW, subject="Forwarded")
    rendered = dataclasses.replace(inner, raw=b"Subject: Forwarded\r\n\r\nbody\r\n")
    multipart = email.message.EmailMessage()
    multipart.set_content("a")
    multipart.add_alternative("<p>a</p>", subtype="html")
    msg = dataclasses.replace(
        message("a@example.com", created=NOW),
        alternatives=[
            Part(b"<i>bytes html</i>", "text/html"),
            Part(MimePart(b"Subject: odd\r\n\r\n"), "message/rfc822"),
        ],
        attachments=[
            _mime_attachment(),
            MimePart(multipart.as_bytes()),
            Part(inner, "message/rfc822"),
            Part(rendered, "message/rfc822", "fwd.eml"),
            Part(MimePart(b"Subject: kept whole\r\n\r\nhi\r\n"), "message/rfc822"),
        ],
    )
    summary = summarize(_entry(codec.to_record(msg)), detail=True)
    assert summary.html == "<i>bytes html</i>"  # an alternative that is a message is no body
    logo, alternative, django, raw, whole = summary.attachments
    assert logo == AttachmentInfo("logo.png", "image/png", 8)
    assert alternative.content_type == "multipart/alternative" and alternative.size
    assert django == AttachmentInfo(None, "message/rfc822", None)  # known once rendered
    assert raw == AttachmentInfo("fwd.eml", "message/rfc822", len(rendered.raw or b""))
    assert whole.size == len(b"Subject: kept whole\r\n\r\nhi\r\n")


def test_a_message_rendered_at_enqueue_is_read_from_its_bytes() -> None:
    raw = email.message.EmailMessage()
    raw["Subject"] = "Rendered"
    raw.set_content("plain text")
    raw.add_alternative("<p>html</p>", subtype="html")
    raw.add_attachment(b"abc", maintype="application", subtype="octet-stream", filename="a.bin")
    odd = email.message.EmailMessage()
    odd["Content-Type"] = "text/plain; charset=no-such-charset"
    odd.set_payload(b"caf\xe9")
    raw.attach(odd)
    msg = dataclasses.replace(message("a@example.com", created=NOW), raw=raw.as_bytes())
    summary = summarize(_entry(codec.to_record(msg)), detail=True)
    assert summary.text == "plain text\n" and summary.html == "<p>html</p>\n"
    assert summary.attachments == (AttachmentInfo("a.bin", "application/octet-stream", 3),)


def test_a_text_part_with_an_unknown_charset_is_shown_as_best_it_can() -> None:
    raw = (
        b"Subject: x\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9\r\n"
    )
    msg = dataclasses.replace(message("a@example.com", created=NOW), raw=raw)
    summary = summarize(_entry(codec.to_record(msg)), detail=True)
    assert summary.text == "caf\ufffd\r\n"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not json", "not valid JSON"),
        (b'{"v": 99}', "codec version 99"),
        (b'{"v": 1, "rcpts": []}', "no envelope recipients"),
    ],
)
def test_a_record_that_cannot_be_decoded_says_so(data: bytes, says: str) -> None:
    rec = Record("bad", data, NOW, NOW, attempts=1)
    summary = summarize(_entry(rec), detail=True)
    assert summary.damage is not None and summary.damage.startswith("cannot be decoded")
    assert says in summary.damage
    assert summary.recipients == () and summary.subject == "" and summary.attempts == 1


def test_a_damaged_or_lost_record_is_not_decoded() -> None:
    damaged = Record("d", b"", NOW, NOW, damage="field 'data' is missing")
    assert summarize(_entry(damaged)).damage == "field 'data' is missing"
    lost = summarize(
        _entry(Record("l", b"", NOW, NOW), State.DEAD, buried=NOW, reason="evicted", lost=True)
    )
    assert lost.lost and lost.damage is None and lost.reason == "evicted"
    assert lost.buried == NOW and lost.as_dict()["lost"] is True


def test_matches_recipients_subject_message_id_and_id_in_any_case() -> None:
    msg = message("Alice@Example.com", created=NOW, subject="Your RECEIPT", id="abc123")
    summary = summarize(_entry(codec.to_record(msg)))
    for text in ("alice@", "receipt", (msg.message_id or "")[1:9].upper(), "C12"):
        assert summary.matches(text), text
    assert not summary.matches("bob")


# -- search --------------------------------------------------------------------------------


def _fill(store: MemoryStore, n: int, *, every: int = 3) -> list[str]:
    """``n`` ready messages, ids m00.., every ``every``-th to needle@example.com; the
    ids of those."""
    hits = []
    for i in range(n):
        to = "needle@example.com" if i % every == 0 else f"hay{i}@example.com"
        store.enqueue([record(to, created=NOW - 1000 + i, id=f"m{i:02d}")])
        if i % every == 0:
            hits.append(f"m{i:02d}")
    return hits


def _all(store: MemoryStore, text: str, **kwargs: object) -> tuple[list[str], int]:
    """Every match, call after call; (ids, calls)."""
    ids: list[str] = []
    cursor = None
    for calls in range(1, 100):
        found = search(store, State.READY, NOW, text, cursor=cursor, **kwargs)  # type: ignore[arg-type]
        ids += [s.id for s in found.matches]
        cursor = found.cursor
        if cursor is None:
            return ids, calls
    raise AssertionError("search kept returning a cursor")


def test_search_finds_matches_across_store_pages(store, monkeypatch) -> None:
    monkeypatch.setattr(browsing, "PAGE", 4)
    hits = _fill(store, 20)
    found = search(store, State.READY, NOW, "NEEDLE", limit=50)
    assert [s.id for s in found.matches] == hits
    assert found.cursor is None and found.examined == 20
    assert all(isinstance(s, Summary) for s in found.matches)


def test_search_stops_at_its_limit_and_goes_on_from_the_middle_of_a_page(
    store, monkeypatch
) -> None:
    monkeypatch.setattr(browsing, "PAGE", 5)
    hits = _fill(store, 20)
    first = search(store, State.READY, NOW, "needle", limit=2)
    assert [s.id for s in first.matches] == hits[:2] and first.examined == 4
    assert first.cursor is not None and first.cursor.startswith("search:")
    for limit in (1, 2, 3, 50):
        assert _all(store, "needle", limit=limit)[0] == hits


def test_search_stops_at_its_budget_with_a_cursor_to_go_on(store, monkeypatch) -> None:
    monkeypatch.setattr(browsing, "PAGE", 4)
    hits = _fill(store, 20, every=7)
    first = search(store, State.READY, NOW, "needle", budget=6)
    assert first.examined == 6 and [s.id for s in first.matches] == ["m00"]
    ids, calls = _all(store, "needle", budget=6)
    assert ids == hits and calls == 4  # 20 records, 6 a call
    # A budget that ends on a page's end hands on the store's own cursor.
    at_end = search(store, State.READY, NOW, "needle", budget=4)
    assert at_end.cursor is not None and not at_end.cursor.startswith("search:")
    assert _all(store, "needle", budget=4)[0] == hits


def test_a_search_cursor_survives_changes_between_calls(store, monkeypatch) -> None:
    monkeypatch.setattr(browsing, "PAGE", 10)
    hits = _fill(store, 12)
    first = search(store, State.READY, NOW, "needle", limit=2)
    assert [s.id for s in first.matches] == ["m00", "m03"]
    # The last one examined goes, and one arrives before the cursor.
    assert store.delete(["m03"], NOW) == 1
    store.enqueue([record("needle@example.com", created=NOW - 5000, id="early")])
    rest = search(store, State.READY, NOW, "needle", limit=50, cursor=first.cursor)
    assert [s.id for s in rest.matches] == hits[2:]


def test_search_newest_first_and_in_other_states(store) -> None:
    hits = _fill(store, 9)
    newest = search(store, State.READY, NOW, "needle", newest_first=True, limit=2)
    assert [s.id for s in newest.matches] == hits[::-1][:2]
    rest = search(store, State.READY, NOW, "needle", newest_first=True, cursor=newest.cursor)
    assert [s.id for s in rest.matches] == hits[::-1][2:]
    claims = store.fetch_due(NOW, 6, 30.0)
    for claim in claims[:3]:
        store.bury(claim, "550 no", NOW + int(claim.id[1:]))
    dead = search(store, State.DEAD, NOW, "needle", limit=1)
    assert [s.id for s in dead.matches] == ["m00"]
    assert [s.id for s in search(store, State.DEAD, NOW, "zzz", cursor=dead.cursor).matches] == []
    flying = search(store, State.IN_FLIGHT, NOW, "needle", limit=1)
    assert [s.id for s in flying.matches] == ["m03"]
    more = search(store, State.IN_FLIGHT, NOW, "needle", cursor=flying.cursor)
    assert [s.id for s in more.matches] == []
    stuck = search(store, State.STUCK, NOW + 60, "hay", limit=1)
    assert [s.id for s in stuck.matches] == ["m04"]


def test_search_goes_on_from_a_listing_cursor(store) -> None:
    hits = _fill(store, 9)
    page = store.browse(State.READY, NOW, limit=4)
    found = search(store, State.READY, NOW, "needle", cursor=page.cursor)
    assert [s.id for s in found.matches] == hits[2:]


@pytest.mark.parametrize(
    "cursor",
    [
        "search:",
        "search:!!!",
        "search:WzFd",  # [1]
        "search:" + "WyJyZWFkeSIsIDEsIG51bGwsIDEuMCwgIngiXQ==",  # newest_first not a bool
        "search:" + "WyJyZWFkeSIsIGZhbHNlLCA3LCAxLjAsICJ4Il0=",  # page not a string
        "search:" + "WyJub3BlIiwgZmFsc2UsIG51bGwsIDEuMCwgIngiXQ==",  # no such state
    ],
)
def test_a_search_cursor_nobody_made_is_refused(store, cursor) -> None:
    with pytest.raises(ValueError, match="not a search cursor"):
        search(store, State.READY, NOW, "x", cursor=cursor)


def test_a_search_cursor_of_another_state_or_order_is_refused(store, monkeypatch) -> None:
    monkeypatch.setattr(browsing, "PAGE", 2)
    _fill(store, 6)
    found = search(store, State.READY, NOW, "needle", limit=1)
    assert found.cursor is not None and found.cursor.startswith("search:")
    with pytest.raises(ValueError, match="another state or order"):
        search(store, State.SCHEDULED, NOW, "needle", cursor=found.cursor)
    with pytest.raises(ValueError, match="another state or order"):
        search(store, State.READY, NOW, "needle", cursor=found.cursor, newest_first=True)
    with pytest.raises(ValueError):
        search(store, State.READY, NOW, "needle", cursor="junk")  # the store's refusal


def test_search_limits_must_be_positive(store) -> None:
    for bad in ({"limit": 0}, {"budget": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            search(store, State.READY, NOW, "x", **bad)  # type: ignore[arg-type]


_WITHOUT_A_PROJECT = """
import sys
from mailqueue_core import codec
from mailqueue_core.browsing import search, summarize
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import State
from mailqueue_stores.memory import MemoryStore

store = MemoryStore("memory://alone")
msg = QueuedMessage("a@example.com", "a@example.com", ["b@example.com"], subject="hi")
store.enqueue([codec.to_record(msg)])
(entry,) = store.browse(State.READY, 1e10).entries
assert summarize(entry, detail=True).text == ""
assert len(search(store, State.READY, 1e10, "B@").matches) == 1
integration = ("backend", "apps", "checks", "admin", "management", "django_settings")
names = [m.split(".") for m in sys.modules]
loaded = [n for n in names if n[0] == "mailqueue_core" and n[1:2] and n[1] in integration]
assert "django.conf" not in sys.modules or not sys.modules["django.conf"].settings.configured
sys.exit(1 if loaded else 0)
"""


def test_the_engine_module_needs_no_django_project() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_A_PROJECT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=["memory", "sqlite", "redis"])
def each_store(request, tmp_path):
    """A fresh queue in each store that can browse."""
    from mailqueue_core.plugins import make_store

    if request.param == "memory":
        yield MemoryStore(f"memory://{uuid.uuid4().hex}")
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/queue.db"
    else:
        url = f"{request.getfixturevalue('redis_server').url}?namespace={uuid.uuid4().hex}"
    store = make_store(url)
    yield store
    store.close()


def test_search_goes_on_mid_page_in_every_store(each_store, monkeypatch) -> None:
    monkeypatch.setattr(browsing, "PAGE", 4)
    hits = _fill(each_store, 14)
    ids, calls = _all_in(each_store, State.READY, "needle", limit=2, budget=5)
    assert ids == hits and calls > 2
    for claim in each_store.fetch_due(NOW, 14, 30.0):
        each_store.bury(claim, "550", NOW + int(claim.id[1:]))
    assert _all_in(each_store, State.DEAD, "needle", limit=2, budget=5)[0] == hits
    newest, _ = _all_in(each_store, State.DEAD, "needle", limit=1, budget=3, newest_first=True)
    assert newest == hits[::-1]


def _all_in(store, state: State, text: str, **kwargs: object) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    for calls in range(1, 100):
        found = search(store, state, NOW, text, cursor=cursor, **kwargs)  # type: ignore[arg-type]
        ids += [s.id for s in found.matches]
        cursor = found.cursor
        if cursor is None:
            return ids, calls
    raise AssertionError("search kept returning a cursor")
