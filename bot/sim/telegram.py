"""A simulator of the Telegram Bot API's ``sendMessage`` (and ``getMe``), served by aiohttp.

It models what the Bot API documentation and the server's answers show:

- the token in the path (``/bot<token>/<method>``, any HTTP method, the method name in
  any case): a token Telegram cannot parse → 404 ``Not Found``, an unknown one → 401
  ``Unauthorized``; every error as ``{"ok": false, "error_code", "description"}``;
- parameters from JSON, a form or the query string; chats by id or ``@username``: unknown
  → 400 ``Bad Request: chat not found``, a user who blocked the bot → 403 ``Forbidden: bot
  was blocked by the user``, a group upgraded to a supergroup → 400 with
  ``parameters.migrate_to_chat_id``;
- ``parse_mode`` HTML and MarkdownV2 parsed into text and ``entities`` as the server does:
  an unescaped reserved character, an unknown, unclosed or mismatched tag or entity → 400
  ``Bad Request: can't parse entities: …``; a ``\\r`` is ignored in MarkdownV2;
- the 4,096-character limit on the text after parsing (UTF-16 units) → 400 ``Bad Request:
  message is too long``; an empty text → 400 ``Bad Request: message text is empty``;
- flood control: more than 20 messages within 60 s in one chat → 429 ``Too Many Requests:
  retry after N`` with ``parameters.retry_after`` (Telegram sends no Retry-After header);
- queued faults: ``status`` (``status``, ``description``), ``rate_limited``
  (``retry_after``), and the shared ``html``, ``latency``, ``truncated``, ``reset``; a
  down switch; ``messages``, every accepted message, parsed.

Not modelled: other methods, the global 30 messages/s limit, link previews, URL and
mention entities found in plain text, custom emoji and expandable block quotes.

    python -m bot.sim.telegram --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from bot.sim.base import Fault, SimServer, proxy_page, serve_until_stopped, simulator_parser

LIMIT = 4096
FLOOD_LIMIT, FLOOD_WINDOW = 20, 60.0  # messages per chat and seconds (Bot API FAQ, groups)
_TOKEN = re.compile(r"^\d+:[\w-]{30,}$")
_PATH = re.compile(r"^/bot([^/]*)/")


class ApiError(Exception):
    """A refusal, answered the Bot API's way."""

    def __init__(self, code: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.code}
        body["description"] = self.description
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.code)


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def _too_many(wait: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class SimChat:
    id: str
    kind: str = "private"  # private | group | supergroup | channel
    username: str | None = None
    blocked: bool = False  # the user blocked the bot (or kicked it from the group)
    migrated_to: str | None = None


@dataclass
class SentMessage:
    message_id: int
    chat_id: str
    text: str  # after entity parsing, as a client shows it
    entities: list[dict[str, Any]]
    payload: dict[str, Any]  # the parameters as received

    def formatting(self) -> list[tuple[str, str]]:
        """Each entity as (type, the text it covers)."""
        data = self.text.encode("utf-16-le")
        found = []
        for e in self.entities:
            start, end = e["offset"] * 2, (e["offset"] + e["length"]) * 2
            found.append((e["type"], data[start:end].decode("utf-16-le")))
        return found


class _Text:
    """Parsed text being built: characters, their length in UTF-16 units, entities."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.units = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.chars.append(text)
        self.units += units(text)

    def entity(self, kind: str, offset: int, **extra: str) -> None:
        if self.units > offset:
            length = self.units - offset
            self.entities.append({"type": kind, "offset": offset, "length": length, **extra})

    def text(self) -> str:
        return "".join(self.chars)


def _entity_error(description: str) -> ApiError:
    return _bad(f"can't parse entities: {description}")


def _at(source: str, index: int) -> int:
    return len(source[:index].encode())


_MARKS = {"__": "underline", "||": "spoiler", "*": "bold", "_": "italic", "~": "strikethrough"}
_RESERVED = set("_*[]()~`>#+-=|{}.!")
_LINK_END = re.compile(r"\]\(((?:\\.|[^)\\])*)\)")
_MUST_ESCAPE = "Character '{}' is reserved and must be escaped with the preceding '\\'"


def parse_markdown_v2(source: str) -> _Text:
    out, stack = _Text(), list[tuple[str, int, int]]()  # (mark, offset, source index)
    i = 0
    while i < len(source):
        char, top = source[i], stack[-1][0] if stack else ""
        mark = next((m for m in _MARKS if source.startswith(m, i)), "")
        if char == "\r":
            i += 1
        elif char == "\\":
            if i + 1 == len(source):
                raise _entity_error(_MUST_ESCAPE.format("\\"))
            out.add(source[i + 1])
            i += 2
        elif top in ("`", "```") and not source.startswith(top, i):
            out.add(char)
            i += 1
        elif top in ("`", "```"):
            out.entity("pre" if top == "```" else "code", stack.pop()[1])
            i += len(top)
        elif source.startswith("```", i):
            stack.append(("```", out.units, i))
            newline = source.find("\n", i)
            i = newline + 1 if newline >= 0 and "`" not in source[i + 3 : newline] else i + 3
        elif char == "`" or char == "[":
            stack.append((char, out.units, i))
            i += 1
        elif char == "]" and top == "[":
            i = _link_end(source, i, out, stack.pop()[1])
        elif mark:
            i = _toggle(source, i, mark, out, stack)
        elif char == ">" and (i == 0 or source[i - 1] == "\n"):
            i += 1  # a block quote line; its entity is not modelled
        elif char in _RESERVED:
            raise _entity_error(_MUST_ESCAPE.format(char))
        else:
            out.add(char)
            i += 1
    if stack:
        mark, _, start = stack[-1]
        kind = {"`": "code", "```": "pre", "[": "text_url"}.get(mark) or _MARKS[mark]
        at = _at(source, start)
        raise _entity_error(f"Can't find end of {kind.title()} entity at byte offset {at}")
    return out


def _toggle(source: str, i: int, mark: str, out: _Text, stack: list[tuple[str, int, int]]) -> int:
    if not any(m == mark for m, _, _ in stack):
        stack.append((mark, out.units, i))
    elif stack[-1][0] == mark:
        out.entity(_MARKS[mark], stack.pop()[1])
    else:
        inner, _, start = stack[-1]
        kind = _MARKS.get(inner, "text_url").title()
        raise _entity_error(f"Can't find end of {kind} entity at byte offset {_at(source, start)}")
    return i + len(mark)


def _link_end(source: str, i: int, out: _Text, offset: int) -> int:
    match = _LINK_END.match(source, i)
    if match is None:
        raise _entity_error(f"Can't find end of a URL at byte offset {_at(source, i)}")
    out.entity("text_link", offset, url=re.sub(r"\\(.)", r"\1", match.group(1)))
    return match.end()


_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(
    r"""<(/?)([a-zA-Z][\w-]*)((?:\s+[\w-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+))?)*)\s*>"""
)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""")
_HTML_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);")


def parse_html(source: str) -> _Text:
    out, stack = _Text(), list[tuple[str, int, str]]()  # (tag, offset, href)
    i = 0
    while i < len(source):
        tag = _TAG.match(source, i) if source[i] == "<" else None
        entity = _HTML_ENTITY.match(source, i) if source[i] == "&" else None
        if source[i] == "<" and tag is None:
            raise _entity_error(f"Unexpected end of name token at byte offset {_at(source, i)}")
        if tag is not None:
            _html_tag(source, i, tag, out, stack)
            i = tag.end()
        elif entity is not None:
            out.add(html.unescape(entity.group()))
            i = entity.end()
        else:
            out.add(source[i])
            i += 1
    if stack:
        raise _entity_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out


def _html_tag(
    source: str, i: int, tag: re.Match[str], out: _Text, stack: list[tuple[str, int, str]]
) -> None:
    name, at = tag.group(2).lower(), _at(source, i)
    if not tag.group(1):
        if name not in _TAG_TYPES:
            raise _entity_error(f'Unsupported start tag "{name}" at byte offset {at}')
        href = _HREF.search(tag.group(3))
        url = next(filter(None, href.groups()), "") if href else ""
        stack.append((name, out.units, html.unescape(url)))
        return
    if not stack:
        raise _entity_error(f"Unexpected end tag at byte offset {at}")
    if stack[-1][0] != name:
        expected = f'expected "</{stack[-1][0]}>", found "</{name}>"'
        raise _entity_error(f"Unmatched end tag at byte offset {at}, {expected}")
    opened, offset, url = stack.pop()
    out.entity(_TAG_TYPES[opened], offset, **({"url": url} if opened == "a" else {}))


def parse(text: str, parse_mode: str | None) -> _Text:
    mode = (parse_mode or "").lower()
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "html":
        return parse_html(text)
    if mode:
        raise _bad(f"unsupported parse_mode {parse_mode!r}")
    plain = _Text()
    plain.add(text)
    return plain


class TelegramSim(SimServer):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.bots: dict[str, str] = {}  # token → bot username
        self.chats: dict[str, SimChat] = {}
        self.messages: list[SentMessage] = []
        self.flood: dict[str, deque[float]] = {}

    def add_bot(self, username: str = "inboxbot_test_bot", token: str | None = None) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        secret = "".join(secrets.choice(alphabet) for _ in range(35))
        token = token or f"{secrets.randbelow(9 * 10**9) + 10**9}:{secret}"
        self.bots[token] = username
        return token

    def add_chat(self, chat_id: str | int, kind: str = "private", **kwargs: Any) -> SimChat:
        chat = SimChat(str(chat_id), kind, **kwargs)
        self.chats[chat.id] = chat
        return chat

    def migrate(self, chat_id: str | int, new_id: str | int) -> SimChat:
        """The group became a supergroup under a new id, as Telegram does on upgrade."""
        self.chats[str(chat_id)].migrated_to = str(new_id)
        return self.add_chat(new_id, "supergroup")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/bot{token}/{method}", self._dispatch)

    def caller(self, request: web.Request) -> str | None:
        match = _PATH.match(request.path)
        return match.group(1) if match else None

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind == "html":
            return proxy_page(int(fault.params.get("status", 502)))
        if fault.kind == "rate_limited":
            wait = int(fault.params.get("retry_after", 5))
            return _too_many(wait).response()
        status = int(fault.params.get("status", 500))
        default = f"{HTTPStatus(status).phrase}"
        return ApiError(status, str(fault.params.get("description", default))).response()

    async def _dispatch(self, request: web.Request) -> web.Response:
        try:
            token = request.match_info["token"]
            if not _TOKEN.match(token):
                raise ApiError(404, "Not Found")
            if token not in self.bots:
                raise ApiError(401, "Unauthorized")
            method = request.match_info["method"].lower()
            params = await _params(request)
            if method == "getme":
                bot = {"id": int(token.split(":")[0]), "is_bot": True}
                return _ok({**bot, "username": self.bots[token]})
            if method == "sendmessage":
                return _ok(self._send_message(params))
            raise ApiError(404, "Not Found")
        except ApiError as err:
            return err.response()

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params.get("chat_id"))
        text = str(params.get("text") or "")
        if not text.strip():
            raise _bad("message text is empty")
        parsed = parse(text, params.get("parse_mode"))
        if parsed.units > LIMIT:
            raise _bad("message is too long")
        self._check_flood(chat.id)
        number = len(self.messages) + 1
        message = SentMessage(number, chat.id, parsed.text(), parsed.entities, params)
        self.messages.append(message)
        result: dict[str, Any] = {"message_id": message.message_id, "date": int(self.clock())}
        result["chat"] = {"id": _chat_id(chat.id), "type": chat.kind}
        result["text"] = message.text
        return {**result, **({"entities": message.entities} if message.entities else {})}

    def _chat(self, chat_id: Any) -> SimChat:
        if chat_id in (None, ""):
            raise _bad("chat_id is empty")
        key = str(chat_id)
        by_name = {f"@{c.username}": c for c in self.chats.values() if c.username}
        chat = self.chats.get(key) or by_name.get(key)
        if chat is None:
            raise _bad("chat not found")
        if chat.migrated_to is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=_chat_id(chat.migrated_to),
            )
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _check_flood(self, chat_id: str) -> None:
        now, sent = self.clock(), self.flood.setdefault(chat_id, deque())
        while sent and sent[0] <= now - FLOOD_WINDOW:
            sent.popleft()
        if len(sent) >= FLOOD_LIMIT:
            raise _too_many(max(1, math.ceil(sent[0] + FLOOD_WINDOW - now)))
        sent.append(now)


def _chat_id(chat_id: str) -> int | str:
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


def _ok(result: dict[str, Any]) -> web.Response:
    return web.json_response({"ok": True, "result": result})


async def _params(request: web.Request) -> dict[str, Any]:
    """Parameters as the Bot API takes them: query string, then a JSON or form body."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise _bad("can't parse JSON object") from None
        params.update(body if isinstance(body, dict) else {})
    elif request.method == "POST":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = TelegramSim()
    token = sim.add_bot(token=args.token)
    for chat_id in args.chat or ["123456789"]:
        sim.add_chat(chat_id, "private" if not chat_id.startswith("-") else "supergroup")

    def banner() -> list[str]:
        chats = ", ".join(sim.chats)
        return [f"Telegram Bot API simulator at {sim.base_url}", f"  token={token} chats={chats}"]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Telegram Bot API (sendMessage).", port=8081)
    parser.add_argument("--token", default=None, help="the bot token to accept")
    parser.add_argument("--chat", action="append", help="a chat id to accept (repeatable)")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
