"""One message in as many SMTP transactions as the server's recipient limit needs.

A server that limits the recipients of a transaction answers ``452`` (RFC 5321
section 4.5.3.1.10; RFC 821 said ``552``, which clients are told to read the
same way) to each RCPT past its limit. Section 3.3 asks the client to send the
message again, to the recipients not yet accepted, in a new transaction; so
this module does what :meth:`smtplib.SMTP.sendmail` does, transaction after
transaction on the same session, until every recipient has been tried:

- ``452``/``552`` to a RCPT once the transaction holds a recipient ends its
  RCPT list: that recipient and those after it go to the next transaction.
- ``452``/``552`` to the first RCPT of a transaction is the server refusing
  that recipient (the limit cannot be the reason): a transient refusal, like
  any other 4xx; the transaction goes on with the next recipient.

While no transaction has been delivered, every failure is raised exactly as
``sendmail`` raises it, so a one-transaction message is classified as before.
Once one has been delivered the message must not be failed as a whole (its
recipients would get it twice): a later failure refuses, each with its
classified error, the recipients it concerns, and a lost session refuses the
rest transiently. The caller acks the message only after the last transaction,
so a crash between transactions sends the whole message again (the usual
duplicate window of the one message in hand).
"""

from __future__ import annotations

import contextlib
import dataclasses
import smtplib

from mailqueue_core.errors import DeliveryError, TransientError
from mailqueue_transports.smtp_errors import classify_reply, translate_send_error

__all__ = ["LIMIT_CODES", "Outcome", "send_in_transactions"]

LIMIT_CODES = frozenset({452, 552})
"""Replies to a RCPT that mean "no more recipients in this transaction"."""


@dataclasses.dataclass
class Outcome:
    """What became of each recipient of a message sent in one or more transactions."""

    accepted: list[str] = dataclasses.field(default_factory=list)
    """Recipients of a transaction the server took (250 after the final dot)."""
    refused: dict[str, DeliveryError] = dataclasses.field(default_factory=dict)
    transactions: int = 0
    """Transactions the server took."""
    session_lost: bool = False
    """The connection is gone (or closed on a 421): the caller must reopen it."""


def send_in_transactions(
    connection: smtplib.SMTP, sender: str, recipients: list[str], data: bytes
) -> Outcome:
    """Deliver ``data`` from ``sender`` to every one of ``recipients``, or say why not.

    Raises what ``sendmail`` raises while no transaction has been delivered.
    """
    connection.ehlo_or_helo_if_needed()  # STARTTLS forgot the first EHLO, as it must
    outcome = Outcome()
    rest = list(recipients)
    options = (
        [f"size={len(data)}"] if connection.does_esmtp and connection.has_extn("size") else []
    )
    while rest:
        if outcome.transactions == 0:
            rest = _transaction(connection, sender, rest, data, options, outcome)
            continue
        try:
            rest = _transaction(connection, sender, rest, data, options, outcome)
        except (smtplib.SMTPException, OSError) as exc:
            # A reply to the command would have been read; this is the session failing.
            _refuse(outcome, rest, TransientError(str(translate_send_error(exc))))
            _close(connection, outcome)
            rest = []
    # smtplib drops its socket when it sees the server go (even inside an RSET it ignores).
    outcome.session_lost = outcome.session_lost or connection.sock is None
    return outcome


def _transaction(
    connection: smtplib.SMTP,
    sender: str,
    recipients: list[str],
    data: bytes,
    options: list[str],
    outcome: Outcome,
) -> list[str]:
    """Send one transaction; return the recipients left for the next one."""
    first = outcome.transactions == 0
    code, reply = connection.mail(sender, options)
    if code != 250:
        if first:
            _end(connection, code)
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        _refuse(outcome, recipients, classify_reply(code, reply, "mail"))
        _end(connection, code, outcome)
        return []
    taken: list[str] = []
    replies: dict[str, tuple[int, bytes]] = {}
    later: list[str] = []
    closed: DeliveryError | None = None
    for i, rcpt in enumerate(recipients):
        code, reply = connection.rcpt(rcpt)
        if code in (250, 251):
            taken.append(rcpt)
            continue
        if code in LIMIT_CODES and taken:
            later = recipients[i:]
            break
        replies[rcpt] = (code, reply)
        if code == 421:
            if first:
                _close(connection, None)
                raise smtplib.SMTPRecipientsRefused(replies)
            closed = classify_reply(code, reply, "rcpt")
            later = [*taken, *recipients[i + 1 :]]  # not sent, for the session is over
            break
    if first and not taken:
        _end(connection, 0)
        raise smtplib.SMTPRecipientsRefused(replies)
    for rcpt, (code, reply) in replies.items():
        outcome.refused[rcpt] = classify_reply(code, reply, "rcpt")
    if closed is not None:
        _refuse(outcome, later, closed)
        _close(connection, outcome)
        return []
    if not taken:
        _end(connection, 0, outcome)
        return []
    answer: bytes | str
    try:
        code, answer = connection.data(data)
    except smtplib.SMTPDataError as exc:  # DATA itself refused: no 354
        code, answer = exc.smtp_code, exc.smtp_error
    if code != 250:
        if first:
            _end(connection, code)
            raise smtplib.SMTPDataError(code, answer)
        _refuse(outcome, taken, classify_reply(code, answer, "data"))
        _end(connection, code, outcome)
        return [] if outcome.session_lost else later
    outcome.accepted.extend(taken)
    outcome.transactions += 1
    return later


def _refuse(outcome: Outcome, recipients: list[str], error: DeliveryError) -> None:
    for rcpt in recipients:
        outcome.refused.setdefault(rcpt, error)


def _end(connection: smtplib.SMTP, code: int, outcome: Outcome | None = None) -> None:
    """End a failed transaction as ``sendmail`` does: close on 421, else RSET."""
    if code == 421:
        _close(connection, outcome)
        return
    # A server gone by now is found by the next command (smtplib closed its socket).
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        connection.rset()


def _close(connection: smtplib.SMTP, outcome: Outcome | None) -> None:
    if outcome is not None:
        outcome.session_lost = True
    try:
        connection.close()
    except OSError:  # pragma: no cover - closing a socket that is gone
        pass
