"""The spool's file names and file format, on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from mailqueue_spool import files

from mailqueue_core.testing import make_record


def test_names_read_back_to_what_was_written() -> None:
    record = make_record(1712345678.123, created=1712345600.5, id="a,b")
    token = files.new_token()
    waiting = files.parse_queue_name(files.waiting_name(record.due, record.created, "a,b"))
    expires = record.due + 30
    claimed = files.parse_queue_name(files.claimed_name(expires, token, record.created, "a,b"))
    assert waiting is not None and claimed is not None
    assert (waiting.claimed, waiting.at, waiting.created, waiting.id) == (
        False,
        1712345678.123,
        1712345600.5,
        "a,b",
    )
    assert (claimed.claimed, claimed.at, claimed.order, claimed.id) == (
        True,
        expires,
        token,
        "a,b",
    )
    buried, stamp, mid = files.parse_dead_name(files.dead_name(5.25, "a,b")) or (0, "", "")
    assert (buried, mid, len(stamp)) == (5.25, "a,b", 20)


@pytest.mark.parametrize(
    "name", ["w,soon,1,2,id", "w,1,1,later,id", "z,1,1,1,id", "w,1,1", ".tmp-abc", "README"]
)
def test_foreign_queue_names_are_not_messages(name: str) -> None:
    assert files.parse_queue_name(name) is None


@pytest.mark.parametrize("name", ["d,long-ago,1,id", "w,1,1,id", "d,1", ".tmp-abc"])
def test_foreign_dead_names_are_not_dead_letters(name: str) -> None:
    assert files.parse_dead_name(name) is None


def test_stamps_and_tokens_follow_arrival() -> None:
    stamps = [files.stamp() for _ in range(1000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert files.new_token() > stamps[-1]


def test_namespace_and_id_encodings_stay_one_plain_file_name() -> None:
    assert files.namespace_dir("..") == "%2E."
    assert files.namespace_dir("a/b") == "a%2Fb"
    assert files.encode_id("x,y/z") == "x%2Cy%2Fz"
    with pytest.raises(ValueError):
        files.encode_id("")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]\n", "not a spool file"),
        (b'{"v": 2}\n', "not a spool file"),
        (b'{"v": 1, "id": "x"}\nDATA', "missing or malformed field"),
        (
            b'{"v": 1, "id": "x", "created": 1, "due": 1, "attempts": null, "last_error": null}\n',
            "missing or malformed field",
        ),
        (b"\xff\n", "can't decode|Expecting value"),
    ],
)
def test_a_file_that_is_not_a_spool_file_is_refused(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "message"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem):
        files.read(str(path))


def test_a_write_that_fails_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        files.write_temp(str(tmp_path), {"bad": object()}, b"data", fsync=True)
    assert list(tmp_path.iterdir()) == []


def test_a_file_holds_the_data_byte_for_byte(tmp_path: Path) -> None:
    record = make_record(1.5, data=b"line one\nline two\n\x00\xff", last_error="451")
    fields = files.header(record, reason="r")
    path = files.write_temp(str(tmp_path), fields, record.data, fsync=False)
    assert files.read(path) == (record, fields)
