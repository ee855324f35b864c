"""Django's own mail tests' message shapes, through the queue and through Django, compared.

The shapes are the messages that Django's ``tests/mail/tests.py`` builds, in
its 5.x layout (``MailTests`` and the backend tests of Django 4.2 and 5.2,
legacy ``email`` API: ``SafeMIMEText``, ``MIMEBase`` attachments, a
``Charset`` as ``encoding``) and in its 6.1 layout (``EmailMessageTests``:
the modern ``email`` API, ``MIMEPart`` attachments, datetimes in headers),
with a few beside them that probe the edges those tests touch (header values
of other types, empty headers in attached parts, attached messages two deep).
Each shape runs on every Django that can build it. For each one the SMTP
server must receive from the queue what Django's SMTP backend sends it, or the
queue must refuse it at send with Django's own error where Django does (see
:mod:`tests.fidelity`), whether the flusher delivers through the smtp
transport or through the django transport wrapping Django's SMTP backend.
"""

from __future__ import annotations

import email.charset
import email.message
from datetime import datetime, timezone
from email.mime.image import MIMEImage
from email.mime.text import MIMEText
from textwrap import dedent

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.translation import gettext_lazy

from mailqueue_core.testing.smtpserver import FaultySMTPServer

pytest.register_assert_rewrite("tests.fidelity")
from tests.fidelity import TRANSPORTS, Shape, assert_same, compare, modern  # noqa: E402

FROM = "from@example.com"
TO = ["to@example.com"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
HTML = "<p>This is <strong>html</strong></p>"
CYRILLIC = "В южных морях "  # noqa: RUF001
CYRILLIC_LETTERS = "А Б В Г Д Е Ж Ѕ З И І К Л М Н О П"  # noqa: RUF001


def message(subject="Subject", body="Content\n", from_email=FROM, to=TO, **kwargs):
    return EmailMessage(subject, body, from_email, to, **kwargs)


def multi(subject="Subject", body="Content\n", from_email=FROM, to=TO, **kwargs):
    return EmailMultiAlternatives(subject, body, from_email, to, **kwargs)


def with_attachments(m, *attachments):
    for attachment in attachments:
        if isinstance(attachment, tuple):
            m.attach(*attachment)
        else:
            m.attach(attachment)
    return m


def with_alternatives(m, *alternatives):
    for content, mimetype in alternatives:
        m.attach_alternative(content, mimetype)
    return m


def with_encoding(m, encoding):
    m.encoding = encoding
    return m


def with_attributes(m, **attributes):
    for name, value in attributes.items():
        setattr(m, name, value)
    return m


def charset(name, body_encoding=None):
    cs = email.charset.Charset(name)
    if body_encoding is not None:
        cs.body_encoding = body_encoding
    return cs


def mime_image(content=PNG, subtype="png", **headers):
    image = MIMEImage(content, subtype)
    for name, value in headers.items():
        image[name.replace("_", "-")] = value
    return image


def mime_part(content=PNG, maintype="image", subtype="png", **kwargs):
    part = email.message.MIMEPart()
    if isinstance(content, str):
        part.set_content(content, subtype=subtype, **kwargs)
    else:
        part.set_content(content, maintype=maintype, subtype=subtype, **kwargs)
    return part


def py_message(subject="child subject"):
    m = email.message.Message()
    if subject is not None:
        m["Subject"] = subject
    m.set_payload("child body")
    return m


def py_email_message(subject="child subject"):
    m = email.message.EmailMessage()
    if subject is not None:
        m["Subject"] = subject
    m.set_content("child body")
    return m


EIGHT_BIT_EML = dedent("""\
    Subject: A message using 8bit CTE
    Content-Type: text/plain; charset=utf-8
    Content-Transfer-Encoding: 8bit

    ¡8-bit content!
    """).encode()

# Addresses of the 6.1 layout's test_address_header_handling.
ADDRESSES = [
    "to@example.com",
    "A name <to@example.com>",
    '"A name" <to@example.com>',
    '"Comma, requires quotes" <to@example.com>',
    '"to@other.com" <to@example.com>',
    "to@éxample.com",
    "To Example <to@éxample.com>",
    "to@xn--fa-hia.example.com",
    "<to@xn--10cl1a0b660p.example.com>",
    '"Display, Name" <to@xn--nxasmm1c.example.com>',
    "Tó Example <to@example.com>",
    '"to@other.com"@example.com',
    'To Example <"to@other.com"@example.com>',
    "Tó Example very long" * 4 + " <to@example.com>",
    "To Example very long" * 4 + " <to@exampl€.com>",
]

_ = gettext_lazy

SHAPES_5X = [
    Shape("ascii", lambda: message()),
    Shape("multiple_recipients", lambda: message(to=["to@example.com", "other@example.com"])),
    Shape("no_to_only_cc", lambda: message(to=None, cc=["cc@example.com"])),
    Shape(
        "recipients_with_empty_strings",
        lambda: message(
            to=["to@example.com", ""],
            cc=["cc@example.com", ""],
            bcc=["", "bcc@example.com"],
            reply_to=["", None],
        ),
    ),
    Shape(
        "cc_and_bcc",
        lambda: message(
            to=["to@example.com", "other@example.com"],
            cc=["cc@example.com", "cc.other@example.com"],
            bcc=["bcc@example.com"],
        ),
    ),
    Shape(
        "cc_header_overrides_cc",
        lambda: message(cc=["foo@example.com"], headers={"Cc": "override@example.com"}),
    ),
    Shape("cc_in_headers_only", lambda: message(headers={"Cc": "foo@example.com"})),
    Shape("reply_to_two", lambda: message(reply_to=["r1@example.com", "r2@example.com"])),
    Shape(
        "recipients_as_tuples",
        lambda: message(to=("to@example.com", "other@example.com"), bcc=("bcc@example.com",)),
    ),
    Shape("header_injection_subject", lambda: message("Subject\nInjection Test")),
    Shape("header_injection_lazy_subject", lambda: message(_("Lazy Subject\nInjection Test"))),
    Shape("header_injection_to", lambda: message(to=["Name\nInjection test <to@example.com>"])),
    Shape(
        "folding_white_space",
        lambda: message(
            "Long subject lines that get wrapped should contain a space continuation "
            "character to get expected behavior in Outlook and Thunderbird"
        ),
    ),
    Shape(
        "message_header_overrides",
        lambda: message(headers={"date": "Fri, 09 Nov 2001 01:08:47 -0000", "Message-ID": "foo"}),
    ),
    Shape("from_header", lambda: message(headers={"From": "from@example.com"})),
    Shape(
        "to_header",
        lambda: message(
            to=["list-subscriber@example.com", "list-subscriber2@example.com"],
            headers={"To": "mailing-list@example.com"},
        ),
    ),
    Shape(
        "reply_to_header",
        lambda: message(reply_to=["foo@example.com"], headers={"Reply-To": "over@example.com"}),
    ),
    Shape(
        "unicode_address_header",
        lambda: message(
            to=[
                '"Firstname Sürname" <to@example.com>',
                '"Sürname, Firstname" <to2@example.com>',
                "other@example.com",
            ]
        ),
    ),
    Shape(
        "unicode_headers",
        lambda: message(
            "Gżegżółka",
            headers={
                "Sender": '"Firstname Sürname" <sender@example.com>',
                "Comments": "My Sürname is non-ASCII",
            },
        ),
    ),
    Shape(
        "non_utf8_headers_multipart",
        lambda: with_encoding(
            with_alternatives(
                multi(
                    "Message from Firstname Sürname",
                    "This is an important message.",
                    to=['"Sürname, Firstname" <to@example.com>'],
                    headers={"Date": "Fri, 09 Nov 2001 01:08:47 -0000", "Message-ID": "foo"},
                ),
                ("<p>This is an <strong>important</strong> message.</p>", "text/html"),
            ),
            "iso-8859-1",
        ),
    ),
    Shape(
        "multipart_with_attachments",
        lambda: with_attachments(
            with_alternatives(multi(body=""), (HTML, "text/html")),
            ("example.txt", "Text file content", "text/plain"),
        ),
    ),
    Shape("alternatives_constructor", lambda: multi(alternatives=[(HTML, "text/html")])),
    Shape("none_body", lambda: message(body=None)),
    Shape(
        "encoding_latin1",
        lambda: with_encoding(message(body="Firstname Sürname is a great guy."), "iso-8859-1"),
    ),
    Shape(
        "encoding_alternatives_latin1",
        lambda: with_encoding(
            with_alternatives(
                multi(body="Firstname Sürname is a great guy."),
                ("<p>Firstname Sürname is a <strong>great</strong> guy.</p>", "text/html"),
            ),
            "iso-8859-1",
        ),
    ),
    Shape(
        "custom_utf8_encoding",  # a Charset whose body encoding is quoted-printable
        lambda: with_encoding(
            message(body="Body with latin characters: àáä."), charset("utf-8", email.charset.QP)
        ),
    ),
    Shape(
        "charset_utf8_default_base64",  # the Charset as Python makes it
        lambda: with_encoding(message(body="Body with latin characters: àáä."), charset("utf-8")),
    ),
    Shape(
        "charset_latin1_with_alternative_and_attachment",
        lambda: with_encoding(
            with_attachments(
                with_alternatives(multi(body="Grüße"), ("<p>Grüße</p>", "text/html")),
                ("notes.txt", "Grüße aus Köln\n", "text/plain"),
            ),
            charset("iso-8859-1"),
        ),
    ),
    Shape(
        "attachments_with_alternative_parts",
        lambda: with_attachments(
            with_alternatives(multi(body="This is an important message."), (HTML, "text/html")),
            ("an attachment.pdf", b"%PDF-1.4.%...", "application/pdf"),
        ),
    ),
    Shape(
        "attachment_constructor_omit_mimetype",
        lambda: message(attachments=[("filename1", "content1")]),
    ),
    Shape(
        "non_ascii_attachment_filename",
        lambda: with_attachments(
            message(), ("une pièce jointe.pdf", b"%PDF-1.4.%...", "application/pdf")
        ),
    ),
    Shape(
        "rfc2231_attachment_filename",
        lambda: with_attachments(message(), (("utf-8", "", "Grüße.txt"), "text", "text/plain")),
    ),
    Shape(
        "attach_guessed_mimetypes",  # as attach_file() reads them
        lambda: with_attachments(
            message(),
            ("file.txt", b"file content\n"),
            ("file.png", PNG),
            ("file_txt", b"no extension\n"),
            ("file_png.txt", PNG),
            ("file.eml", b"Subject: file\r\n\r\nattached message\r\n"),
        ),
    ),
    Shape(
        "attach_text_as_bytes",
        lambda: with_attachments(
            message(), ("utf8.txt", "ütƒ-8\n".encode()), ("not-utf8.txt", b"\x86unknown\n")
        ),
    ),
    Shape(
        "attach_8bit_rfc822_message_non_ascii",
        lambda: with_attachments(message(), ("attachment.eml", EIGHT_BIT_EML, "message/rfc822")),
    ),
    Shape(
        "attach_mime_image",
        lambda: with_attachments(
            message(),
            mime_image(
                b"GIF89a...",
                "gif",
                Content_Disposition="inline",
                Content_ID="<content-id@example.org>",
            ),
        ),
    ),
    Shape(
        "attach_mime_image_in_constructor",
        lambda: message(
            attachments=[mime_image(Content_Disposition="attachment; filename=test.png")]
        ),
    ),
    Shape(
        "attach_mime_text",
        lambda: with_attachments(message(), MIMEText("Grüße, text part", "plain", "utf-8")),
    ),
    Shape(
        "attach_rfc822_django_message",
        lambda: with_attachments(
            message("parent message", "parent body"),
            (None, EmailMessage("child subject", "child body"), "message/rfc822"),
        ),
    ),
    Shape(
        "attach_rfc822_python_message",
        lambda: with_attachments(
            message("parent message", "parent body"), (None, py_message(), "message/rfc822")
        ),
    ),
    Shape(
        "attach_rfc822_python_email_message",
        lambda: with_attachments(
            message("parent message", "parent body"), (None, py_email_message(), "message/rfc822")
        ),
    ),
    Shape(
        "attach_rfc822_as_string",
        lambda: with_attachments(
            message("parent message", "parent body"),
            (None, py_message().as_string(), "message/rfc822"),
        ),
    ),
    Shape(
        "attach_rfc822_as_bytes",
        lambda: with_attachments(
            message("parent message", "parent body"),
            (None, py_message().as_bytes(), "message/rfc822"),
        ),
    ),
    Shape("dont_mangle_from_in_body", lambda: message(body="From the future")),
    Shape("body_7bit", lambda: message(body="Body with only ASCII characters.")),
    Shape("body_8bit", lambda: message(body="Body with latin characters: àáä.")),
    Shape(
        "body_8bit_long_line",
        lambda: message(
            body=f"Body with non latin characters: {CYRILLIC_LETTERS}.",
            headers={"From": "from@example.com"},
        ),
    ),
    Shape(
        "nonascii_surrogateescape_body",  # undecodable bytes kept by surrogateescape
        lambda: message(body="Föö bär".encode("iso-8859-1").decode("ascii", "surrogateescape")),
    ),
    Shape("send_unicode", lambda: message("Chère maman", "Je t'aime très fort")),
    Shape("send_long_lines", lambda: message(body=CYRILLIC * 60)),
    Shape(
        "send_verbose_name", lambda: message(from_email='"Firstname Sürname" <from@example.com>')
    ),
    Shape(
        "html_send_mail",  # what send_mail(html_message=...) builds
        lambda: with_alternatives(
            multi("Subject", "Content", "sender@example.com", ["nobody@example.com"]),
            ("HTML Content", "text/html"),
        ),
    ),
    Shape(
        "idn_send",
        lambda: message(from_email="from@öäü.com", to=["to@öäü.com"], cc=["cc@öäü.com"]),
    ),
    Shape("recipient_without_domain", lambda: message(from_email="tester", to=["django"])),
    Shape(
        "lazy_addresses",
        lambda: EmailMessage(
            from_email=_("tester"),
            to=[_("to1"), _("to2")],
            cc=[_("cc1"), _("cc2")],
            bcc=[_("bcc")],
            reply_to=[_("reply")],
        ),
    ),
    Shape(
        "mixed_subtype_related",  # the undocumented attribute the 5.x API honours
        lambda: with_attributes(
            with_attachments(message(), mime_image(Content_ID="<logo>")), mixed_subtype="related"
        ),
    ),
    Shape(
        "content_subtype_html",
        lambda: with_attributes(message(body="<h1>Hi</h1>"), content_subtype="html"),
    ),
]

SHAPES_61 = [
    Shape("bcc_in_headers", lambda: message(headers={"Bcc": "bcc@example.com"})),
    Shape(
        "datetime_in_date_header",
        lambda: message(headers={"Date": datetime(2001, 11, 9, 1, 8, 47, tzinfo=timezone.utc)}),
    ),
    Shape(
        "naive_datetime_in_date_header",
        lambda: message(headers={"Date": datetime(2001, 11, 9, 1, 8, 47)}),
    ),
    Shape("date_in_date_header", lambda: message(headers={"Date": datetime(2001, 11, 9).date()})),
    Shape("int_header", lambda: message(headers={"X-Count": 5})),
    Shape("none_header", lambda: message(headers={"X-Nothing": None})),
    Shape(
        "datetime_in_other_header",
        lambda: message(headers={"X-When": datetime(2001, 11, 9, tzinfo=timezone.utc)}),
    ),
    Shape(
        "lazy_headers",
        lambda: message(_("subject"), headers={"List-Unsubscribe": _("list-unsubscribe")}),
    ),
    Shape(
        "alternative_alternatives",
        lambda: with_alternatives(
            multi(),
            ("non-text\x07string", "application/x-ccmail-rtf"),
            (b"non-text\x07bytes", "application/x-ccmail-rtf"),
            (b"text bytes\n", "text/x-amp-html"),
            ("text string\n", "text/x-amp-html"),
        ),
    ),
    Shape(
        "attach_text_as_bytes_using_property",
        lambda: with_attributes(
            message(),
            attachments=[
                ("utf8.txt", "ütƒ-8\n".encode(), "text/plain"),
                ("not-utf8.txt", b"\x86unknown-encoding\n", "text/plain"),
            ],
        ),
    ),
    Shape(
        "attach_mime_part",
        lambda: with_attachments(
            message(),
            mime_part(
                b"GIF89a...", subtype="gif", disposition="inline", cid="<content-id@example.org>"
            ),
        ),
        when=modern,
    ),
    Shape(
        "attach_mime_part_in_constructor",
        lambda: message(attachments=[mime_part(filename="test.png")]),
        when=modern,
    ),
    Shape(
        "decoded_attachment_text_mime_part",
        lambda: message(attachments=[mime_part("content1", subtype="plain")]),
        when=modern,
    ),
    Shape(
        "attach_mime_part_empty_header",
        lambda: message(attachments=[_with_header(mime_part(), "X-Note", "")]),
        when=modern,
    ),
    Shape(
        "attach_rfc822_python_email_message_without_subject",
        lambda: with_attachments(
            message("parent", "parent body"), (None, py_email_message(None), "message/rfc822")
        ),
    ),
    Shape(
        "attach_rfc822_python_email_message_empty_subject",
        lambda: with_attachments(
            message("parent", "parent body"), (None, py_email_message(""), "message/rfc822")
        ),
    ),
    Shape(
        "attach_rfc822_python_message_empty_subject",
        lambda: with_attachments(
            message("parent", "parent body"), (None, py_message(""), "message/rfc822")
        ),
    ),
    Shape(
        "long_lines_base64",
        lambda: message(body=CYRILLIC * 60),
    ),
    Shape("long_lines_quoted_printable", lambda: message(body="I de sørlige hav " * 58)),
    Shape("address_header_handling", lambda: message(to=ADDRESSES)),
    Shape(
        "address_header_injection_sender",
        lambda: message(headers={"Sender": "Name\nInjection <to@example.com>"}),
    ),
    Shape("localpart_only_address", lambda: message(from_email="django", to=["localpartonly"])),
    Shape(
        "unicode_display_name_in_from_email",
        lambda: message(from_email='"Firstname Sürname" <from@example.com>'),
    ),
    Shape("non_ascii_local_part", lambda: message(to=["nø@example.dk"])),
    Shape(
        "encodes_idna_in_smtp_commands",
        lambda: EmailMessage(
            from_email="lists@discussão.example.org",
            to=["To Example <to@漢字.example.com>"],
            bcc=["monitor@discussão.example.org"],
            headers={
                "From": "Gestor de listas <lists@discussão.example.org>",
                "To": "Discussão Django <django@discussão.example.org>",
            },
        ),
    ),
    Shape(
        "does_not_reencode_idna",
        lambda: EmailMessage(
            from_email='"βόλος" <from@xn--fa-hia.example.com>',
            to=['"faß" <to@xn--10cl1a0b660p.example.com>'],
            cc=['"ශ්‍රී" <cc@xn--nxasmm1c.example.com>'],
            bcc=['"نامه‌ای." <bcc@xn--mgba3gch31f060k.example.com>'],
        ),
    ),
    # test_mime_structure's cases.
    Shape("structure_single_body", lambda: message(body="text")),
    Shape(
        "structure_single_body_with_attachment",
        lambda: message(body="text", attachments=[("image.gif", PNG, "image/png")]),
    ),
    Shape(
        "structure_alternative_bodies",
        lambda: multi(body="text", alternatives=[("<p>HTML</p>", "text/html")]),
    ),
    Shape(
        "structure_alternative_bodies_with_attachments",
        lambda: multi(
            body="text",
            alternatives=[("<p>HTML</p>", "text/html")],
            attachments=[("image.gif", PNG, "image/png")],
        ),
    ),
    Shape(
        "structure_alternative_bodies_with_rfc822_attachment",  # the child has no subject
        lambda: multi(
            body="text",
            alternatives=[("<p>HTML</p>", "text/html")],
            attachments=[(None, EmailMessage(body="text"), "message/rfc822")],
        ),
    ),
    Shape(
        "structure_attachment_only",
        lambda: message(body="", attachments=[("image.gif", PNG, "image/png")]),
    ),
    Shape(
        "structure_alternative_only",
        lambda: multi(body="", alternatives=[("<p>HTML</p>", "text/html")]),
    ),
    Shape(
        "structure_alternative_and_attachment_only",
        lambda: multi(
            body="",
            alternatives=[("<p>HTML</p>", "text/html")],
            attachments=[("image.gif", PNG, "image/png")],
        ),
    ),
    Shape("structure_empty_message", lambda: EmailMessage(to=TO)),
    Shape("structure_empty_multi_alternatives", lambda: EmailMultiAlternatives(to=TO)),
    Shape(
        "nested_rfc822_two_levels",
        lambda: with_attachments(
            message("outer"),
            (
                "middle.eml",
                with_attachments(
                    EmailMessage("middle", "middle body"),
                    (None, EmailMessage(body="inner"), "message/rfc822"),
                ),
                "message/rfc822",
            ),
        ),
    ),
    Shape(
        "positional_arguments_order",
        lambda: EmailMessage(
            "subject",
            "body\n",
            "from@example.com",
            ["to@example.com"],
            bcc=["bcc@example.com"],
            attachments=[("file.txt", "attachment\n", "text/plain")],
            headers={"X-Header": "custom header"},
            cc=["cc@example.com"],
            reply_to=["reply-to@example.com"],
        ),
    ),
    Shape("all_params_set_before_send", lambda: _all_params_set_later()),
    Shape(
        "legacy_subtype_attributes",  # the 6.x API refuses them
        lambda: with_attributes(
            with_alternatives(multi(), (HTML, "text/html")), alternative_subtype="related"
        ),
    ),
]


def _with_header(part, name, value):
    part[name] = value
    return part


def _all_params_set_later():
    m = EmailMessage(
        "original subject",
        "original body\n",
        "original-from@example.com",
        ["original-to@example.com"],
        bcc=["original-bcc@example.com"],
        attachments=[("original.txt", "original attachment\n", "text/plain")],
        headers={"X-Header": "original header"},
        cc=["original-cc@example.com"],
        reply_to=["original-reply-to@example.com"],
    )
    m.subject = "new subject"
    m.body = "new body\n"
    m.from_email = "new-from@example.com"
    m.to = ["new-to@example.com"]
    m.bcc = ["new-bcc@example.com"]
    m.attachments = [
        ("new1.txt", "new attachment 1\n", "text/plain"),
        ("new2.txt", "new attachment 2\n", "text/csv"),
    ]
    m.extra_headers = {"X-Header": "new header"}
    m.cc = ["new-cc@example.com"]
    m.reply_to = ["new-reply-to@example.com"]
    return m


SHAPES = [s for s in SHAPES_5X + SHAPES_61 if s.when()]


@pytest.fixture(scope="module")
def server():
    with FaultySMTPServer() as s:
        yield s


def test_every_shape_has_its_own_name():
    names = [s.name for s in SHAPES_5X + SHAPES_61]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_server_receives_what_django_sends(server, shape, transport):
    queue, django = compare(server, shape, transport)
    assert_same(queue, django)
