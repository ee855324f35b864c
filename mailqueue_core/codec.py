"""The versioned JSON codec between :class:`QueuedMessage` and a store's bytes.

JSON, never pickle: a queue store may be shared, and unpickling what is in it
would be running whatever someone put there. Every record carries ``"v"``, so a
store written by one release is read by the next; a record that cannot be
decoded raises :class:`~mailqueue_core.errors.CodecError`, which the flusher
turns into a burial with the reason. A record is written in the oldest version
that can hold it, so that a flusher of the previous release, still running
during an upgrade, reads it or refuses it by its version, never misreads it.

Bytes are base64; ``extra`` (providers' attributes) may hold dates and times,
tagged so that they come back as the same type. A Django message attached as
``message/rfc822`` is encoded as a message of its own, inside its part. Text
that Python keeps with lone surrogates (bytes decoded with
``surrogateescape``) is written with JSON escapes, so that every record is
valid UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
from typing import Any

from mailqueue_core.errors import CodecError
from mailqueue_core.message import Attachment, MimePart, Part, QueuedMessage
from mailqueue_core.store import Record

__all__ = ["READS", "VERSION", "decode", "encode", "extra_problem", "to_record"]

#: The newest record version this release writes; it reads every one in READS.
VERSION = 2
READS = (1, 2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _content(content: str | bytes | MimePart | QueuedMessage) -> dict[str, Any]:
    if isinstance(content, str):
        return {"text": content}
    if isinstance(content, MimePart):
        return {"message": _b64(content.raw)}
    if isinstance(content, QueuedMessage):
        return {"email": _fields(content)}
    return {"b64": _b64(content)}


def _part(part: Part) -> dict[str, Any]:
    out: dict[str, Any] = {"mimetype": part.mimetype, **_content(part.content)}
    if part.filename is not None:
        out["filename"] = part.filename
    return out


def _attachment(attachment: Attachment) -> dict[str, Any]:
    if isinstance(attachment, MimePart):
        return {"mime": _b64(attachment.raw)}
    return _part(attachment)


class _ExtraEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.datetime):
            return {"$datetime": o.isoformat()}
        if isinstance(o, datetime.date):
            return {"$date": o.isoformat()}
        if isinstance(o, decimal.Decimal):
            return {"$decimal": str(o)}
        if isinstance(o, (bytes, bytearray)):
            return {"$bytes": _b64(bytes(o))}
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        return super().default(o)


def _extra_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key == "$datetime":
            return datetime.datetime.fromisoformat(value)
        if key == "$date":
            return datetime.date.fromisoformat(value)
        if key == "$decimal":
            return decimal.Decimal(value)
        if key == "$bytes":
            return base64.b64decode(value)
    return obj


_ENCODER = _ExtraEncoder(ensure_ascii=False, separators=(",", ":"))
# For the rare record with lone surrogates, which UTF-8 cannot carry raw.
_ASCII_ENCODER = _ExtraEncoder(ensure_ascii=True, separators=(",", ":"))


def extra_problem(value: Any) -> str | None:
    """Why ``value`` cannot be kept in ``extra``, or None when it can."""
    try:
        _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def encode(message: QueuedMessage) -> bytes:
    """The message's content and envelope as bytes (delivery state excluded).

    Raises ``TypeError`` naming the attribute when an ``extra`` value cannot be
    represented in JSON (:func:`mailqueue_core.convert.capture` leaves such
    attributes out, saying so, before they get here).
    """
    doc = {"v": _version(message), **_fields(message)}
    try:
        return _ENCODER.encode(doc).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(doc).encode("ascii")


def _version(message: QueuedMessage) -> int:
    """2 for a message with an attached message kept as one (version 1 has bytes only)."""
    parts = [p for p in message.attachments if isinstance(p, Part)]
    return 2 if any(isinstance(p.content, (MimePart, QueuedMessage)) for p in parts) else 1


def _fields(message: QueuedMessage) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "from": message.from_email,
        "env_from": message.envelope_from,
        "rcpts": message.recipients,
    }
    if message.raw is not None:
        doc["raw"] = _b64(message.raw)
    if message.subject:
        doc["subject"] = message.subject
    if message.body:
        doc["body"] = message.body
    for key in ("to", "cc", "bcc", "reply_to"):
        value = getattr(message, key)
        if value:
            doc[key] = value
    if message.headers:
        doc["headers"] = list(message.headers.items())
    if message.alternatives:
        doc["alternatives"] = [_part(p) for p in message.alternatives]
    if message.attachments:
        doc["attachments"] = [_attachment(a) for a in message.attachments]
    if message.multipart:
        doc["multipart"] = True
    if message.subtypes:
        doc["subtypes"] = message.subtypes
    if message.encoding is not None:
        doc["encoding"] = message.encoding
    if message.transport is not None:
        doc["transport"] = message.transport
    if message.expires is not None:
        doc["expires"] = message.expires
    if message.extra:
        for name, value in message.extra.items():
            problem = extra_problem(value)
            if problem is not None:
                raise TypeError(
                    f"mailqueue cannot store the message attribute {name!r}: {problem}. "
                    "Only JSON-representable values (and dates, decimals, bytes) can be queued."
                )
        doc["extra"] = message.extra
    return doc


def to_record(message: QueuedMessage) -> Record:
    return Record(
        id=message.id,
        data=encode(message),
        created=message.created,
        due=message.due,
        attempts=message.attempts,
        last_error=message.last_error,
    )


def _str(doc: dict[str, Any], key: str, default: str | None = "") -> Any:
    value = doc.get(key, default)
    if value is not None and not isinstance(value, str):
        raise CodecError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _str_list(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CodecError(f"field {key!r} must be a list of strings")
    return value


def _decode_content(doc: dict[str, Any]) -> str | bytes | MimePart | QueuedMessage:
    if "text" in doc:
        return _str(doc, "text")
    if "message" in doc:
        return MimePart(base64.b64decode(_str(doc, "message"), validate=True))
    if "email" in doc:
        if not isinstance(doc["email"], dict):
            raise CodecError("an attached message must be an object")
        return _decode_fields(doc["email"])
    return base64.b64decode(_str(doc, "b64"), validate=True)


def _decode_part(doc: Any) -> Part:
    if not isinstance(doc, dict):
        raise CodecError("a part must be an object")
    filename = doc.get("filename")
    if isinstance(filename, list):
        if len(filename) != 3:
            raise CodecError("an RFC 2231 filename must have three items")
        filename = tuple(filename)
    elif filename is not None and not isinstance(filename, str):
        raise CodecError("a filename must be a string")
    return Part(_decode_content(doc), _str(doc, "mimetype"), filename)


def _decode_attachment(doc: Any) -> Attachment:
    if isinstance(doc, dict) and "mime" in doc:
        return MimePart(base64.b64decode(_str(doc, "mime"), validate=True))
    return _decode_part(doc)


def decode(record: Record) -> QueuedMessage:
    """The message in ``record``; raises :class:`CodecError` saying what is wrong."""
    try:
        doc = json.loads(record.data, object_hook=_extra_hook)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"record {record.id} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CodecError(f"record {record.id} is not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version not in READS:
        raise CodecError(
            f"record {record.id} has codec version {version!r}; "
            f"this release reads {', '.join(map(str, READS))}"
        )
    try:
        message = _decode_fields(doc)
    except CodecError as exc:
        raise CodecError(f"record {record.id}: {exc}") from None
    except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise CodecError(f"record {record.id} has a malformed field: {exc}") from exc
    message.id = record.id
    message.created = record.created
    message.due = record.due
    message.attempts = record.attempts
    message.last_error = record.last_error
    if not message.recipients:
        raise CodecError(f"record {record.id} has no envelope recipients")
    return message


def _decode_fields(doc: dict[str, Any]) -> QueuedMessage:
    headers = doc.get("headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
    ):
        raise CodecError("field 'headers' must be a list of [name, value] strings")
    subtypes = doc.get("subtypes", {})
    extra = doc.get("extra", {})
    if not isinstance(subtypes, dict) or not isinstance(extra, dict):
        raise CodecError("fields 'subtypes' and 'extra' must be objects")
    raw = doc.get("raw")
    return QueuedMessage(
        from_email=_str(doc, "from"),
        envelope_from=_str(doc, "env_from"),
        recipients=_str_list(doc, "rcpts"),
        subject=_str(doc, "subject"),
        body=_str(doc, "body"),
        to=_str_list(doc, "to"),
        cc=_str_list(doc, "cc"),
        bcc=_str_list(doc, "bcc"),
        reply_to=_str_list(doc, "reply_to"),
        headers=dict(headers),
        alternatives=[_decode_part(p) for p in doc.get("alternatives", [])],
        attachments=[_decode_attachment(a) for a in doc.get("attachments", [])],
        multipart=bool(doc.get("multipart", False)),
        subtypes=subtypes,
        encoding=_str(doc, "encoding", None),
        extra=extra,
        raw=None if raw is None else base64.b64decode(raw, validate=True),
        transport=_str(doc, "transport", None),
        expires=_moment(doc, "expires"),
        id="",  # an attached message's; decode() gives a record its own
    )


def _moment(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(f"field {key!r} must be a number, got {type(value).__name__}")
    return float(value)
