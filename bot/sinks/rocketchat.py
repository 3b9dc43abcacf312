"""Rocket.Chat: post each notification with ``chat.postMessage`` to a channel or a user.

    rc:
      type: rocketchat
      base_url: https://chat.example.org
      user_id: aobEdbYhXfu5hkeqG     # the posting user's id, with
      token: ${RC_TOKEN}             # its personal access token
      channel: "@alice"              # a direct message; or "#general"
      format: markdown               # the default; or text
      max_length: 5000               # the server's Message_MaxAllowedSize

The post is the title in bold, the message, then the item's link; high and urgent ones
start with a warning emoji (Rocket.Chat has no priorities). ``parseUrls`` is off: the
server would otherwise fetch every link for a preview, and one-time links in mails
(sign-in, verification) are spent by a fetch.

Rocket.Chat's message parser has no backslash escapes (its grammar defines one and never
uses it), so ``\\*x\\*`` would still be bold, backslashes showing. Item content instead
gets look-alikes for the characters that pair into formatting (``* _ ~ ` |``) and a
zero-width space where one breaks a construct (``@all``, ``#channel``, ``](``, a quote
or list at a line's start); links and e-mail addresses stay intact. The server allows
10 calls per minute per route and says in ``X-RateLimit-Reset`` (epoch milliseconds)
when its window ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr

from bot.config import HttpUrl, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify, retry_after
from bot.sinks.base import File, Notification, Sink, answered

ZWSP = "\u200b"
MESSAGE_LIMIT = 5000  # Message_MaxAllowedSize's default, in JavaScript (UTF-16) units
TITLE_LIMIT = 250
MARK = {"high": ":warning: ", "urgent": ":rotating_light: "}
LOOKALIKES = str.maketrans({"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ", "|": "ǀ"})
# A link or address the parser takes whole: after a space, a bracket or the start, up to
# the punctuation it leaves outside (its ``Extra`` characters) before a space or the end.
_WHOLE = re.compile(r"(?:(?<=[\s(<\[!])|^)(?:https?://\S+?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
                    r"(?=[.,!%~*\"':;()=]*(?:\s|$))")  # fmt: skip
_BREAK_AFTER = re.compile(r"(?<![A-Za-z0-9])[@#]|[\]\\]|<(?=t:)")  # mentions, ](, \(, <t:
_LINE_START = re.compile(r"(?m)^(?=[->]|\d+\.)")  # quotes and lists
_WAIT = re.compile(rb"wait (\d+) seconds")


def neutralise(text: str) -> str:
    """``text`` with every formatting character of Rocket.Chat made inert."""
    text = _BREAK_AFTER.sub(lambda m: m.group() + ZWSP, text.translate(LOOKALIKES))
    return _LINE_START.sub(ZWSP, text)


def escape_rocketchat(text: str) -> str:
    """``neutralise`` around the links and addresses, which stay as they are."""
    out, last = [], 0
    for m in _WHOLE.finditer(text):
        out += [neutralise(text[last : m.start()]), m.group()]
        last = m.end()
    return "".join([*out, neutralise(text[last:])])


def units(text: str) -> int:
    """The length JavaScript (and so the server) counts: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def fit_units(text: str, limit: int, end: str = "…") -> str:
    if units(text) <= limit:
        return text
    cut = text.encode("utf-16-le")[: 2 * max(0, limit - units(end))]
    return cut.decode("utf-16-le", errors="ignore").rstrip() + end


def reset_delay(reset: float, now: float) -> float:
    """Seconds until ``reset``: epoch milliseconds as the server sends it, epoch seconds
    as some proxies do, or a number small enough to be the delay itself."""
    if reset > 1e11:
        reset /= 1000
    elif reset < 1e9:
        return max(0.0, reset)
    return max(0.0, reset - now)


class RocketChatConfig(SinkConfig):
    type: Literal["rocketchat"]
    base_url: HttpUrl
    user_id: str = Field(min_length=1)
    token: SecretStr
    channel: str = Field(pattern=r"^[#@][^\s#@]+$")
    format: Literal["markdown", "text"] = "markdown"
    max_length: int = Field(MESSAGE_LIMIT, ge=100)


class RocketChatSink(Sink):
    type_name = "rocketchat"
    config_model = RocketChatConfig
    default_rate = "10/min"  # API_Enable_Rate_Limiter_Limit_Calls_Default per 60 s, per route

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, RocketChatConfig)
        self.rc = config
        self.clock: Callable[[], float] = time.time  # to read X-RateLimit-Reset against
        self.http = HttpClient(
            session,
            config.base_url,
            service=name,
            headers={"X-User-Id": config.user_id, "X-Auth-Token": config.token.get_secret_value()},
            timeout=config.timeout.total_seconds(),
        )

    def escape(self, text: str) -> str:
        # In text format the whole message is escaped at sending, template text included.
        return escape_rocketchat(text) if self.format == "markdown" else text

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        body = {"channel": self.rc.channel, "text": self.text(notification), "parseUrls": False}
        resp = await self.http.request("POST", "/api/v1/chat.postMessage", json=body)
        if not resp.ok:
            raise self._error(resp)
        answered(resp, self.name, "message")  # the server answers the message it stored

    def text(self, n: Notification) -> str:
        """The post: the title in bold, the message cut to fit, the link kept whole."""
        title = neutralise(fit_units(" ".join(n.title.split()), TITLE_LIMIT))
        head = MARK.get(n.priority, "") + (f"*{title}*" if title else "")
        message = n.message if self.format == "markdown" else escape_rocketchat(n.message)
        link = n.url or ""
        room = self.rc.max_length - units(head) - units(link) - 2  # two line breaks
        parts = [head.strip(), fit_units(message.strip(), max(0, room)), link]
        return fit_units("\n".join(p for p in parts if p), self.rc.max_length)

    def _error(self, resp: Response) -> RemoteError:
        detail = resp.error_code("errorType", "error")
        if resp.status == 429:
            return TransientError(
                f"{resp.what} → HTTP 429 (rate limited)",
                service=self.name,
                status=429,
                retry_after=self._retry_after(resp),
            )
        if resp.status == 401:
            return AuthError(f"{resp.what} → HTTP 401: check user_id and token",
                             service=self.name, status=401)  # fmt: skip
        if resp.status == 400 and detail in ("invalid-channel", "error-room-not-found"):
            return PermanentError(f"{resp.what} → HTTP 400: no channel or user {self.rc.channel}",
                                  service=self.name, status=400)  # fmt: skip
        return classify(resp, self.name, detail)

    def _retry_after(self, resp: Response) -> float | None:
        """When the window ends: ``X-RateLimit-Reset``, else the wait the body names."""
        try:
            return reset_delay(float(resp.headers["X-RateLimit-Reset"]), self.clock())
        except (KeyError, ValueError):
            pass
        found = _WAIT.search(resp.body)
        return float(found.group(1)) if found else retry_after(resp.headers)
