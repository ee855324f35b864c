"""The JSON codec: every message round-trips, and every bad record says what is wrong."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailqueue_core import codec
from mailqueue_core.errors import CodecError
from mailqueue_core.message import MimePart, Part, QueuedMessage
from mailqueue_core.store import Record

# Any code point, lone surrogates included (text decoded with surrogateescape).
text = st.text(st.characters(exclude_categories=()), max_size=200)
address = st.emails().map(str)
content = st.one_of(text, st.binary(max_size=500))


@st.composite
def attached_messages(draw) -> QueuedMessage:
    """A Django message attached as message/rfc822: content only, no queue id or state."""
    return QueuedMessage(
        from_email=draw(text),
        envelope_from="",
        recipients=[],
        subject=draw(text),
        body=draw(text),
        to=draw(st.lists(text, max_size=2)),
        headers=draw(st.dictionaries(text, text, max_size=3)),
        attachments=draw(st.lists(st.builds(Part, content, text), max_size=2)),
        encoding=draw(st.one_of(st.none(), st.just("iso-8859-1"))),
        id="",
    )


rfc822 = st.just("message/rfc822")


@st.composite
def messages(draw) -> QueuedMessage:
    rcpts = draw(st.lists(address, min_size=1, max_size=30))
    return QueuedMessage(
        from_email=draw(text),
        envelope_from=draw(address),
        recipients=rcpts,
        subject=draw(text),
        body=draw(text),
        to=draw(st.lists(text, max_size=5)),
        cc=draw(st.lists(text, max_size=5)),
        bcc=draw(st.lists(text, max_size=5)),
        reply_to=draw(st.lists(text, max_size=3)),
        headers=draw(st.dictionaries(text, text, max_size=5)),
        alternatives=draw(st.lists(st.builds(Part, content, text), max_size=3)),
        attachments=draw(
            st.lists(
                st.one_of(
                    st.builds(Part, content, text, st.one_of(st.none(), text)),
                    st.builds(Part, content, text, st.tuples(text, text, text)),
                    st.builds(MimePart, st.binary(max_size=300)),
                    st.builds(Part, st.builds(MimePart, st.binary(max_size=300)), rfc822),
                    st.builds(Part, attached_messages(), rfc822, st.one_of(st.none(), text)),
                ),
                max_size=4,
            )
        ),
        multipart=draw(st.booleans()),
        subtypes=draw(st.dictionaries(st.sampled_from(["content_subtype"]), text, max_size=1)),
        encoding=draw(st.one_of(st.none(), st.sampled_from(["utf-8", "iso-8859-1"]))),
        extra=draw(
            st.dictionaries(
                st.sampled_from(["tags", "metadata", "send_at", "merge_data"]),
                st.one_of(
                    st.lists(text, max_size=3),
                    st.dictionaries(text, st.one_of(text, st.integers()), max_size=3),
                    st.datetimes(timezones=st.just(datetime.timezone.utc)),
                ),
                max_size=3,
            )
        ),
        raw=draw(st.one_of(st.none(), st.binary(max_size=300))),
        transport=draw(st.one_of(st.none(), text)),
        created=1.5,
        due=2.5,
        attempts=draw(st.integers(0, 100)),
        last_error=draw(st.one_of(st.none(), text)),
    )


@given(messages())
@settings(max_examples=200, deadline=None)
def test_any_message_round_trips(message):
    record = codec.to_record(message)
    assert codec.decode(record) == message
    # Byte for byte: encoding the decoded message gives the same record.
    assert codec.encode(codec.decode(record)) == record.data
    record.data.decode("utf-8")  # valid UTF-8 even for lone surrogates


def test_a_record_is_written_in_the_oldest_version_that_holds_it():
    plain = QueuedMessage("a@x.com", "a@x.com", ["b@x.com"], attachments=[MimePart(b"x")])
    assert json.loads(codec.encode(plain))["v"] == 1  # a release that reads only 1 reads it
    child = QueuedMessage("a@x.com", "", [], body="inner", id="")
    nested = QueuedMessage(
        "a@x.com", "a@x.com", ["b@x.com"], attachments=[Part(child, "message/rfc822")]
    )
    doc = json.loads(codec.encode(nested))
    assert doc["v"] == 2 == codec.VERSION
    assert doc["attachments"] == [
        {"mimetype": "message/rfc822", "email": {"from": "a@x.com", "env_from": "", "rcpts": [],
                                                 "body": "inner"}}
    ]  # fmt: skip
    assert codec.decode(Record("id1", json.dumps(doc).encode(), 1.0, 1.0)) == dataclasses.replace(
        nested, id="id1", created=1.0, due=1.0
    )


def test_lone_surrogates_are_written_as_json_escapes():
    body = "F\udcf6\udcf6 b\udce4r"  # iso-8859-1 bytes decoded with surrogateescape
    msg = QueuedMessage("a@x.com", "a@x.com", ["b@x.com"], body=body, extra={"note": body})
    data = codec.encode(msg)
    assert data.isascii() and b"\\udcf6" in data
    back = codec.decode(Record("id1", data, 1.0, 1.0))
    assert back.body == body and back.extra == {"note": body}


def test_extra_problem_says_why_a_value_cannot_be_kept():
    assert codec.extra_problem({"tags": ["a"], "when": datetime.date(2026, 1, 2)}) is None
    assert "not JSON serializable" in codec.extra_problem(object())


def test_extra_values_keep_their_types():
    msg = QueuedMessage(
        from_email="a@x.com",
        envelope_from="a@x.com",
        recipients=["b@x.com"],
        extra={
            "send_at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2026, 1, 2),
            "price": decimal.Decimal("1.10"),
            "blob": b"\x00\x01",
            "tags": ("a", "b"),
        },
    )
    back = codec.decode(codec.to_record(msg)).extra
    assert back["send_at"] == msg.extra["send_at"]
    assert back["day"] == datetime.date(2026, 1, 2)
    assert back["price"] == decimal.Decimal("1.10")
    assert back["blob"] == b"\x00\x01"
    assert back["tags"] == ["a", "b"]


def test_unrepresentable_extra_names_the_attribute():
    msg = QueuedMessage("a@x.com", "a@x.com", ["b@x.com"], extra={"esp_extra": object()})
    with pytest.raises(TypeError, match="'esp_extra'"):
        codec.encode(msg)


def rec(data) -> Record:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Record("id1", raw, 1.0, 1.0)


GOOD = {"v": 1, "from": "a@x.com", "env_from": "a@x.com", "rcpts": ["b@x.com"]}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"v": 1, "from"', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ([1, 2], "not a JSON object"),
        ({**GOOD, "v": 3}, "codec version 3; this release reads 1, 2"),
        ({**GOOD, "v": True}, "codec version True"),
        ({k: v for k, v in GOOD.items() if k != "v"}, "codec version None"),
        ({**GOOD, "from": 5}, "'from' must be a string"),
        ({**GOOD, "rcpts": "b@x.com"}, "'rcpts' must be a list of strings"),
        ({**GOOD, "rcpts": []}, "no envelope recipients"),
        ({**GOOD, "headers": {"a": "b"}}, "'headers' must be a list"),
        ({**GOOD, "extra": []}, "must be objects"),
        ({**GOOD, "attachments": [{"mime": "%%%"}]}, "malformed field"),
        ({**GOOD, "attachments": [5]}, "a part must be an object"),
        ({**GOOD, "attachments": [{"mimetype": "a/b", "text": "x", "filename": ["a"]}]}, "three"),
        ({**GOOD, "attachments": [{"mimetype": "a/b", "text": "x", "filename": 5}]}, "filename"),
        ({**GOOD, "alternatives": [{"mimetype": "text/html", "b64": 7}]}, "must be a string"),
        (
            {**GOOD, "v": 2, "attachments": [{"mimetype": "message/rfc822", "email": 5}]},
            "an attached message must be an object",
        ),
        (
            {**GOOD, "v": 2, "attachments": [{"mimetype": "message/rfc822", "email": {"to": 5}}]},
            "'to' must be a list of strings",
        ),
        (
            {**GOOD, "v": 2, "attachments": [{"mimetype": "message/rfc822", "message": "%"}]},
            "malformed field",
        ),
    ],
)
def test_bad_records_raise_codec_error_with_reason(data, reason):
    with pytest.raises(CodecError, match=reason) as info:
        codec.decode(rec(data))
    assert "id1" in str(info.value)


def test_minimal_record_decodes():
    msg = codec.decode(rec(GOOD))
    assert msg.recipients == ["b@x.com"] and msg.subject == "" and msg.raw is None
