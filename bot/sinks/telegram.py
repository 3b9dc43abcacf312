"""Telegram: the Bot API's ``sendMessage`` into one chat, as HTML, MarkdownV2 or plain text.

    tg:
      type: telegram
      token: ${TELEGRAM_BOT_TOKEN}
      chat_id: "123456789"      # a user, a group ("-100…") or "@channelname"
      format: html              # html (default) | markdown (MarkdownV2) | text
      long_messages: split      # split (default) | truncate

The title goes first, in bold; link previews are off. Telegram has no priority, only a
silent send: ``min`` and ``low`` go out silently, as does ``options: {silent: true}``.

A message longer than 4,096 characters (counted in UTF-16 units on the text as sent,
markup included, so always on the safe side of Telegram's count after entity parsing)
is split into several messages, cut before a line where possible and never inside a
tag, an entity or an escape: formatting still open at a cut is closed there and opened
again in the next part. Parts already accepted are remembered, in memory, by
notification id, so a retry after a failed part sends only the rest; a restart between
parts sends the whole message again. ``default_rate`` is Telegram's group limit (20
messages a minute per chat; each part counts); a private chat takes ``rate: 1/s``.

Errors: 429 waits ``parameters.retry_after``; 401, and the 404 of a token Telegram cannot
parse, are auth errors; so is 403 (the user blocked the bot, never started it, or it was
removed from the group): the token is fine, but the chat refuses it and, as with a bad
token, nothing can go out until the user acts, so the notifications wait in the outbox
rather than being dropped one by one. "chat not found", a group that became a
supergroup (the error names the new chat_id) and markup Telegram cannot parse are
permanent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import SecretStr, field_validator

from bot.config import HttpUrl, Model, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify, retry_after
from bot.markup import escape_html
from bot.sinks.base import File, Notification, Sink

LIMIT = 4096
PARSE_MODES = {"html": "HTML", "markdown": "MarkdownV2"}
QUIET = ("min", "low")  # sent with disable_notification: Telegram's only priority
# Every character MarkdownV2 reserves, and the backslash that escapes them (Bot API docs).
_MARKDOWN_V2 = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


def escape_markdown_v2(text: str) -> str:
    return _MARKDOWN_V2.sub(r"\\\1", text)


class TelegramConfig(SinkConfig):
    type: Literal["telegram"]
    token: SecretStr
    chat_id: str
    base_url: HttpUrl = "https://api.telegram.org"
    long_messages: Literal["split", "truncate"] = "split"
    format: Literal["html", "markdown", "text"] = "html"

    @field_validator("chat_id", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TelegramOptions(Model):
    """What a notify entry's ``options:`` may hold for Telegram."""

    silent: bool = False


class TelegramSink(Sink):
    type_name = "telegram"
    config_model = TelegramConfig
    options_model = TelegramOptions
    default_rate: ClassVar[str | None] = "20/min"

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, TelegramConfig)
        self.tg = config
        # The token is part of the base URL, so logged and raised paths are "/sendMessage".
        base = f"{config.base_url.rstrip('/')}/bot{config.token.get_secret_value()}"
        self.http = HttpClient(session, base, service=name, timeout=config.timeout.total_seconds())
        self.sent_parts: dict[str, int] = {}  # notification id → parts accepted so far

    def escape(self, text: str) -> str:
        if self.format == "markdown":
            return escape_markdown_v2(text)
        return escape_html(text) if self.format == "html" else text

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        parts = self.parts(notification)
        done = self.sent_parts.get(notification.id, 0)
        silent = bool(notification.options.get("silent")) or notification.priority in QUIET
        for index in range(done, len(parts)):
            try:
                await self.send_part(parts[index], silent)
            except PermanentError:
                self.sent_parts.pop(notification.id, None)  # never retried: forget it
                raise
            self.sent_parts[notification.id] = index + 1
        self.sent_parts.pop(notification.id, None)

    def parts(self, n: Notification) -> list[str]:
        """The text(s) to send: bold title, message, click URL; split or cut to the limit."""
        lines = [self.bold(n.title)] if n.title else []
        lines += [n.message] if n.message else []
        lines += [self.escape(n.url)] if n.url else []
        truncate = self.tg.long_messages == "truncate"
        return split_message("\n".join(lines), self.format, LIMIT, truncate=truncate)

    def bold(self, title: str) -> str:
        if self.format == "html":
            return f"<b>{escape_html(title)}</b>"
        return f"*{escape_markdown_v2(title)}*" if self.format == "markdown" else title

    async def send_part(self, text: str, silent: bool) -> None:
        payload: dict[str, Any] = {
            "chat_id": self.tg.chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
            "disable_web_page_preview": True,  # the same, for servers before Bot API 7.0
        }
        if self.format in PARSE_MODES:
            payload["parse_mode"] = PARSE_MODES[self.format]
        if silent:
            payload["disable_notification"] = True
        resp = await self.http.request("POST", "/sendMessage", json=payload)
        if not resp.ok:
            raise self.failure(resp)
        answer = resp.json(self.name)  # an HTML page from a proxy is a TransientError
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            raise PermanentError(f"{resp.what} → answered without ok: true", service=self.name)

    def failure(self, resp: Response) -> RemoteError:
        """Telegram's answer as our error; its ``description`` never holds the token."""
        body = _json_object(resp)
        if not body:
            return classify(resp, self.name)
        params = body.get("parameters") or {}
        what = f"{resp.what} → HTTP {resp.status} ({body.get('description', '')})"
        status = resp.status
        if status == 429 or "retry_after" in params:
            hint = params.get("retry_after")
            wait = float(hint) if isinstance(hint, int | float) else retry_after(resp.headers)
            return TransientError(what, service=self.name, status=status, retry_after=wait)
        if status in (401, 404):  # 404: a token Telegram cannot even parse
            fix = "the bot token was refused; set token to the one @BotFather gave"
            return AuthError(f"{what}: {fix}", service=self.name, status=status)
        if status == 403:
            fix = f"the bot may not write to chat {self.tg.chat_id}: unblock or start it, add it"
            return AuthError(f"{what}: {fix}", service=self.name, status=status)
        if "migrate_to_chat_id" in params:
            fix = f'the group became a supergroup: set chat_id: "{params["migrate_to_chat_id"]}"'
            return PermanentError(f"{what}: {fix}", service=self.name, status=status)
        if status >= 500:
            return classify(resp, self.name, str(body.get("description", "")))
        return PermanentError(what, service=self.name, status=status)


def _json_object(resp: Response) -> dict[str, Any]:
    try:
        body = resp.json("")
    except TransientError:
        return {}
    return body if isinstance(body, dict) else {}


# Splitting a message that is already markup. The text is read as atoms (a tag, an
# entity, an escape, a formatting mark, or one character of content); a cut only ever
# falls after content, outside a Markdown link, and closes what is open at that point.

_HTML_ATOM = re.compile(r"<(/?)([a-zA-Z][\w-]*)[^<>]*>|&#?\w+;|.", re.S)
_MD_ATOM = re.compile(r"\\.|```[^\n`]*\n?|`|\]\((?:\\.|[^)\\])*\)|__|\|\||[*_~\[]|.", re.S)
_MD_CODE = re.compile(r"\\.|```|`|.", re.S)
_MD_TOGGLES = ("*", "_", "__", "~", "||")


@dataclass(frozen=True)
class _Open:
    """Formatting open at some point: how it is closed at a cut and opened again after."""

    key: str
    reopen: str
    close: str  # "" for a Markdown link: it cannot be cut


@dataclass(frozen=True)
class _Atom:
    text: str
    content: bool  # not markup: a cut may follow it
    opened: tuple[_Open, ...]  # the formatting open after this atom


def split_message(text: str, fmt: str, limit: int, *, truncate: bool = False) -> list[str]:
    """``text`` as pieces of at most ``limit`` UTF-16 units, each well-formed markup;
    with ``truncate``, only the first piece, ending in "…"."""
    if _units(text) <= limit:
        return [text]
    atoms = _atoms(text, fmt)
    room = limit - 2 - truncate  # a \r at each end of the content (see _glue), the "…"
    pieces: list[str] = []
    start, opened = 0, tuple[_Open, ...]()
    while start < len(atoms):
        end, resume = _cut(atoms, start, opened, room)
        state = atoms[end - 1].opened
        body = "".join(a.text for a in atoms[start:end]) + ("…" if truncate else "")
        pieces.append(_glue([*(o.reopen for o in opened), body, *_closers(state)]))
        if truncate:
            break
        start, opened = resume, state
    return pieces


def _cut(atoms: list[_Atom], start: int, opened: tuple[_Open, ...], room: int) -> tuple[int, int]:
    """Where the piece from ``start`` ends, and where the next begins: before the last
    line break (else space) that keeps the piece half full, else as late as fits."""
    size = _units(_glue(o.reopen for o in opened))
    best = line = space = 0
    end = start
    for end in range(start, len(atoms)):
        atom = atoms[end]
        size += _units(atom.text)
        if size + _units(_glue(_closers(atom.opened))) > room:
            break
        if end + 1 == len(atoms):
            return len(atoms), len(atoms)
        if atom.content and all(o.close for o in atom.opened):
            best = end + 1
            after = atoms[end + 1].text if size >= room // 2 else ""
            line, space = (best if after == "\n" else line), (best if after == " " else space)
    if line or space:
        return (line, line + 1) if line else (space, space + 1)
    forced = best or max(end, start + 1)  # nothing cuttable fits: a giant link or tag
    return forced, forced


def _atoms(text: str, fmt: str) -> list[_Atom]:
    if fmt == "html":
        return list(_html_atoms(text))
    if fmt == "markdown":
        return list(_markdown_atoms(text))
    return [_Atom(char, True, ()) for char in text]


def _html_atoms(text: str) -> Iterator[_Atom]:
    opened: tuple[_Open, ...] = ()
    for match in _HTML_ATOM.finditer(text):
        closing, name = match.group(1), match.group(2)
        if name and closing:
            opened = _without(opened, name)
        elif name:
            opened = (*opened, _Open(name, match.group(), f"</{name}>"))
        yield _Atom(match.group(), not name, opened)


def _markdown_atoms(text: str) -> Iterator[_Atom]:
    opened: tuple[_Open, ...] = ()
    pos, code = 0, ""  # code: the mark that ends the code or pre block we are in
    while pos < len(text):
        match = (_MD_CODE if code else _MD_ATOM).match(text, pos)
        assert match is not None  # both end in "." with DOTALL
        token, pos, content = match.group(), match.end(), False
        if code:
            content = token != code
            opened, code = (opened, code) if content else (_without(opened, code), "")
        elif token.startswith("`"):
            code = "```" if token.startswith("```") else "`"
            opened = (*opened, _Open(code, token, code))
        elif token == "[":
            opened = (*opened, _Open("[", token, ""))
        elif token.startswith("]("):
            opened = _without(opened, "[")
        elif token in _MD_TOGGLES:
            is_open = any(o.key == token for o in opened)
            opened = _without(opened, token) if is_open else (*opened, _Open(token, token, token))
        else:
            content = True
        yield _Atom(token, content, opened)


def _without(opened: tuple[_Open, ...], key: str) -> tuple[_Open, ...]:
    for i in range(len(opened) - 1, -1, -1):
        if opened[i].key == key:
            return opened[:i] + opened[i + 1 :]
    return opened


def _closers(opened: tuple[_Open, ...]) -> list[str]:
    return [o.close for o in reversed(opened)]


def _glue(chunks: Iterable[str]) -> str:
    text = ""
    for chunk in chunks:
        if text.endswith("_") and chunk.startswith("_"):
            text += "\r"  # MarkdownV2 reads "___" greedily; the Bot API ignores a \r between
        text += chunk
    return text


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2
