"""Reading IMAP answers and the mail in them: pure functions, fed real FETCH lines in tests.

A FETCH answer comes from aioimaplib as lines: ``b'7 FETCH (UID 7 FLAGS (\\Seen) …
BODY[HEADER] {66}'``, then the literal (a ``bytearray``), then ``b')'``. Mail is parsed
with the standard library (``policy.default``): RFC 2047 words are decoded, and a part in a
charset Python does not know is read as UTF-8 with replacement characters, never refused.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from bot.item import Attachment, File
from bot.text import find_links, html_to_text

_START = re.compile(rb"\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_CODE = re.compile(rb"\[(UIDVALIDITY|UIDNEXT) (\d+)\]")
_PARSER = BytesParser(policy=policy.default)


@dataclass
class Fetched:
    """One message of a FETCH answer."""

    uid: int
    flags: tuple[str, ...] = ()
    size: int | None = None
    received: datetime | None = None  # INTERNALDATE: when the server got it
    data: bytes = b""  # the literal: the header, or the whole message
    extra: list[bytes] = field(default_factory=list)


def fetched(lines: Iterable[bytes | bytearray]) -> list[Fetched]:
    """The messages of a FETCH answer (unsolicited FETCHes without a UID are left out)."""
    records: list[tuple[bytes, bytes]] = []  # (attributes, literal)
    for line in lines:
        if isinstance(line, bytearray):
            if records:
                records[-1] = (records[-1][0], records[-1][1] + bytes(line))
        elif _START.match(line):
            records.append((line, b""))
        elif records:
            records[-1] = (records[-1][0] + b" " + line, records[-1][1])
    found = []
    for attrs, literal in records:
        uid = _UID.search(attrs)
        if not uid:
            continue
        flags = _FLAGS.search(attrs)
        size = _SIZE.search(attrs)
        date = _DATE.search(attrs)
        found.append(Fetched(
            int(uid[1]), tuple(flags[1].decode().split()) if flags else (),
            int(size[1]) if size else None, internal_date(date[1].decode()) if date else None,
            literal,
        ))  # fmt: skip
    return found


def internal_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip(), "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def mailbox_codes(lines: Iterable[bytes | bytearray]) -> dict[str, int]:
    """UIDVALIDITY and UIDNEXT from a SELECT's answer."""
    codes = {}
    for line in lines:
        if isinstance(line, bytes):
            for name, value in _CODE.findall(line):
                codes[name.decode()] = int(value)
    return codes


def uid_set(uids: Sequence[int]) -> str:
    """``1:3,7``: the UIDs as ranges, so a batch of a thousand stays one short command."""
    ordered = sorted(set(uids))
    ranges: list[list[int]] = []
    for uid in ordered:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


def folder_name(name: str) -> str:
    """A folder name as a quoted IMAP string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out, pending = [], ""
    for ch in name + "\0":
        if " " <= ch <= "~" or ch == "\0":
            if pending:
                coded = base64.b64encode(pending.encode("utf-16-be")).decode().rstrip("=")
                out.append("&" + coded.replace("/", ",") + "-")
                pending = ""
            out.append("&-" if ch == "&" else ch.strip("\0"))
        else:
            pending += ch
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the mail ----------------------------------------------------------------------------


def parse(data: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def headers(message: Message) -> dict[str, str]:
    """Each header once (its first occurrence), by lower-case name, RFC 2047 decoded."""
    found: dict[str, str] = {}
    for name in message:
        key = name.lower()
        if key not in found:
            found[key] = header_text(message, name)
    return found


def header_text(message: Message, name: str) -> str:
    try:
        return " ".join(str(message.get(name, "")).split())
    except (LookupError, ValueError, TypeError):  # a malformed encoded word
        return ""


def addresses(message: Message, name: str) -> str:
    """The bare addresses of a header (``alice@example.org, bob@example.org``)."""
    pairs = getaddresses([header_text(message, name)])
    return ", ".join(addr for _, addr in pairs if addr)


def part_text(part: Message) -> str:
    """A text part's content; an unknown or wrong charset reads as UTF-8, replaced."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, KeyError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def body(message: EmailMessage) -> dict[str, Any]:
    """The detail fields: text (or the html as text), html, attachments, links."""
    html_part = message.get_body(preferencelist=("html",))
    text_part = message.get_body(preferencelist=("plain",))
    html = part_text(html_part) if html_part is not None else None
    text = part_text(text_part) if text_part is not None else (html_to_text(html) if html else "")
    attachments = tuple(
        Attachment(part.get_filename() or "attachment", part.get_content_type(), len(data))
        for part, data in _attachments(message)
    )
    return {"text": text, "html": html, "attachments": attachments,
            "links": find_links(text, html)}  # fmt: skip


def files(message: EmailMessage, max_size: int) -> list[File]:
    return [
        File(part.get_filename() or "attachment", part.get_content_type(), data)
        for part, data in _attachments(message)
        if len(data) <= max_size
    ]


def _attachments(message: EmailMessage) -> list[tuple[Message, bytes]]:
    found: list[tuple[Message, bytes]] = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append((part, payload if isinstance(payload, bytes) else b""))
    return found
