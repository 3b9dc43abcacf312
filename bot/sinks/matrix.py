"""Matrix: an ``m.room.message`` into a room (by id or alias), as the bot's own user.

    mx:
      type: matrix
      homeserver: https://matrix.example.org   # the client-server API's base URL
      token: ${MATRIX_TOKEN}                   # the bot user's access token
      room: "!abc:example.org"                 # or "#inbox:example.org", resolved once
      format: html                             # or text

The bot's user must have joined the room (invite it, then join as it). Each message
carries ``body`` (plain text) and, in ``html``, ``formatted_body``
(``org.matrix.custom.html``): the title in bold, linked to the item's URL, then the
message, whose newlines become ``<br>`` because templates are written line by line for
every target. Markdown is not offered: Matrix clients render HTML, not Markdown.

- Idempotency: the transaction id is the notification id, so a retry of a send whose
  answer was lost gives the same event. Synapse remembers transaction ids per device
  (the access token's) for 24 hours, across its restarts.
- Priority: ``min`` and ``low`` go out as ``m.notice``, which the default push rules
  (``.m.rule.suppress_notices``) do not notify; the rest as ``m.text``. The notify
  option ``notice: true|false`` overrides that.
- Mentions: every message has an empty ``m.mentions``, which switches off the legacy
  push rules that ping on ``@room`` or a display name in the body: item content cannot
  ping anyone.
- Length: an event is at most 65,536 bytes of canonical JSON, signatures included.
  ``formatted_body`` is cut at 36,000 bytes and ``body`` at 24,000 (counted as JSON
  string bytes, escapes included), ending in "…".
- Errors: 429 ``M_LIMIT_EXCEEDED`` is transient with ``retry_after_ms`` or the
  ``Retry-After`` header as the hint; 401 (a refused token) is an auth error; 403 (not
  in the room, not allowed to post) and an unknown alias are permanent; 5xx transient.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr, field_validator

from bot.config import HttpUrl, Model, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify, retry_after
from bot.markup import escape_html, line_breaks
from bot.sinks.base import File, Notification, Sink, answered
from bot.text import html_to_text

BODY_LIMIT = 24_000
FORMATTED_LIMIT = 36_000
_TXN = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_PARTIAL_MARKUP = re.compile(r"<[^>]*$|&[#\w]*$")  # a tag or entity cut in half
_ACCOUNT_CODES = {"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_USER_LOCKED", "M_USER_SUSPENDED",
                  "M_USER_DEACTIVATED", "M_CONSENT_NOT_GIVEN"}  # fmt: skip


class MatrixConfig(SinkConfig):
    type: Literal["matrix"]
    homeserver: HttpUrl
    token: SecretStr
    room: str
    format: Literal["html", "text"] = "html"

    @field_validator("room")
    @classmethod
    def _room(cls, room: str) -> str:
        # Room version 12 ids have no server part: "!" and a hash is a whole room id.
        if not re.fullmatch(r"![^\s]+|#[^:\s]+:\S+", room):
            raise ValueError(f"{room!r} is neither a room id (!abc:example.org) "
                             "nor an alias (#name:example.org)")  # fmt: skip
        return room


class MatrixOptions(Model):
    """What a notify entry's ``options:`` may hold for Matrix."""

    notice: bool | None = None  # m.notice (not notified) or m.text; default: by priority


class MatrixSink(Sink):
    type_name = "matrix"
    config_model = MatrixConfig
    options_model = MatrixOptions
    default_rate = "10/min"  # Synapse's default rc_message: 0.2/s with a burst of 10

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, MatrixConfig)
        self.room = config.room
        self.room_id = config.room if config.room.startswith("!") else None
        self.http = HttpClient(
            session,
            f"{config.homeserver}/_matrix/client/v3",
            service=name,
            headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
            timeout=config.timeout.total_seconds(),
        )

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        room_id = await self.resolve_room()
        path = f"/rooms/{quote(room_id, safe='')}/send/m.room.message/{txn_id(notification.id)}"
        resp = await self.http.request("PUT", path, json=self.content(notification))
        if not resp.ok:
            raise self.error(resp)
        answered(resp, self.name, "event_id")  # a retry with the same txn id is safe

    async def resolve_room(self) -> str:
        """The room id, looking an alias up once."""
        if self.room_id is None:
            resp = await self.http.request("GET", f"/directory/room/{quote(self.room, safe='')}")
            if not resp.ok:
                raise self.error(resp)
            room_id = resp.json(self.name).get("room_id")
            if not isinstance(room_id, str):
                raise TransientError(f"{resp.what} answered no room_id", service=self.name)
            self.room_id = room_id
        return self.room_id

    def content(self, n: Notification) -> dict[str, Any]:
        notice = n.options.get("notice")
        if notice is None:
            notice = n.priority in ("min", "low")
        url = n.url if n.url and re.match(r"https?://", n.url) else None
        content: dict[str, Any] = {"msgtype": "m.notice" if notice else "m.text"}
        if self.format == "html":
            html = to_html(n.title, n.message, url)
            content["body"] = with_url(html_to_text(html), url)
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = fit_html(html, FORMATTED_LIMIT)
        else:
            content["body"] = with_url("\n".join(filter(None, [n.title, n.message])), url)
        content["m.mentions"] = {}  # no legacy @room or display-name pings from the body
        return content

    def error(self, resp: Response) -> RemoteError:
        code = resp.error_code("errcode")
        what = f"{resp.what} → HTTP {resp.status}{f' {code}' if code else ''}"
        if resp.status == 429 or code == "M_LIMIT_EXCEEDED":
            return TransientError(what, service=self.name, status=resp.status,
                                  retry_after=retry_hint(resp))  # fmt: skip
        if resp.status == 401 or code in _ACCOUNT_CODES:
            return AuthError(f"{what}: the access token was refused; set `token` to a valid "
                             "access token of the bot's user", service=self.name,
                             status=resp.status)  # fmt: skip
        if resp.status == 403:
            return PermanentError(f"{what}: the bot's user is not in room {self.shown_room} "
                                  f"or may not post there ({server_says(resp)}); invite it "
                                  "and join it", service=self.name, status=resp.status)  # fmt: skip
        if resp.status == 404 and code == "M_NOT_FOUND" and resp.path.startswith("/directory"):
            return PermanentError(f"{what}: no room has the alias {self.room}",
                                  service=self.name, status=resp.status)  # fmt: skip
        if resp.status in (404, 405) and code in ("", "M_UNRECOGNIZED"):
            return PermanentError(f"{what}: is `homeserver` the Matrix client API's URL?",
                                  service=self.name, status=resp.status)  # fmt: skip
        return classify(resp, self.name, server_says(resp))

    @property
    def shown_room(self) -> str:
        if self.room_id and self.room_id != self.room:
            return f"{self.room} ({self.room_id})"
        return self.room


def txn_id(notification_id: str) -> str:
    """A URL-safe transaction id, the same for every attempt of one notification."""
    if _TXN.fullmatch(notification_id):
        return notification_id
    return hashlib.sha256(notification_id.encode()).hexdigest()[:32]


def to_html(title: str, message: str, url: str | None) -> str:
    head = escape_html(title)
    if url:
        head = f'<a href="{escape_html(url)}">{head}</a>'
    return f"<b>{head}</b>" + (f"<br>{line_breaks(message)}" if message else "")


def with_url(text: str, url: str | None) -> str:
    """``text`` cut to fit ``BODY_LIMIT`` with the URL on a last line of its own."""
    tail = f"\n{url}" if url else ""
    return fit_json(text, BODY_LIMIT - json_size(tail) + 2) + tail


def json_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string (quotes and escapes included), UTF-8."""
    return len(json.dumps(text, ensure_ascii=False).encode())


def fit_json(text: str, limit: int, end: str = "…") -> str:
    """``text`` cut with ``end`` so that it takes at most ``limit`` bytes as a JSON string.
    Escapes make the size uneven per character: find the longest prefix by bisection."""
    if json_size(text) <= limit:
        return text
    room = limit - json_size(end) + 2  # the quotes are counted once
    short, long = 0, len(text)  # json_size(text[:short]) fits, text[:long] does not
    while long - short > 1:
        middle = (short + long) // 2
        short, long = (middle, long) if json_size(text[:middle]) <= room else (short, middle)
    return text[:short].rstrip() + end


def fit_html(html: str, limit: int) -> str:
    """Like ``fit_json``, without leaving half a tag or entity before the "…"."""
    cut = fit_json(html, limit)
    if cut == html:
        return html
    return _PARTIAL_MARKUP.sub("", cut.removesuffix("…")).rstrip() + "…"


def retry_hint(resp: Response) -> float | None:
    """Synapse's ``retry_after_ms`` (body) or the newer spec's ``Retry-After`` header,
    whichever asks for longer."""
    hints = [retry_after(resp.headers)]
    try:
        ms = json.loads(resp.body).get("retry_after_ms")
    except (ValueError, AttributeError):
        ms = None
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
        hints.append(ms / 1000)
    present = [h for h in hints if h is not None]
    return max(present) if present else None


def server_says(resp: Response) -> str:
    """The homeserver's own short explanation (``error``), which holds no secret."""
    return resp.error_code("error")[:200]
