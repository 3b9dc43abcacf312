"""Discord: a channel webhook, with the notification as message content or as an embed.

    dc:
      type: discord
      url: ${DISCORD_WEBHOOK_URL}   # https://discord.com/api/webhooks/ID/TOKEN: a secret
      format: markdown              # markdown (default) | text

Content is Discord markdown: the title in bold, the message, then the click URL. With
``options: {embed: true}`` the notification is an embed instead (title, description,
link, a colour for the priority). Discord has no priority, but it has silent messages:
``min``, ``low`` and ``options: {silent: true}`` send with SUPPRESS_NOTIFICATIONS.

Nothing in a notification can ping: ``allowed_mentions`` is empty, and item content has
every markdown special backslashed and a zero-width space after each ``@``, so
``@everyone`` does not even look like a mention. Content is cut at 2,000 characters (an
embed's description at 4,096). Link previews are off (SUPPRESS_EMBEDS): Discord's
crawler would otherwise open the item's links, one-time links included. ``?wait=true``
makes Discord answer with the message or the error instead of a bare 204.
``default_rate``: Discord allows 5 requests per 2 s per webhook and about 30 messages a
minute per channel.

Errors: 429 waits the body's ``retry_after`` (else ``Retry-After``); 404 Unknown Webhook
(deleted) and 401 Invalid Webhook Token are auth errors, since the URL is the credential
and only a new one helps; other 4xx (content refused) are permanent; 5xx are transient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import aiohttp

from bot.config import Model, SecretUrl, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify, retry_after
from bot.markup import escape_markdown
from bot.sinks.base import File, Notification, Sink, answered

CONTENT_LIMIT, TITLE_LIMIT, DESCRIPTION_LIMIT = 2000, 256, 4096
SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS = 1 << 2, 1 << 12
COLOURS = {"min": 0x99AAB5, "low": 0x99AAB5, "default": 0x5865F2, "high": 0xFEE75C,
           "urgent": 0xED4245}  # fmt: skip
ZWSP = "\u200b"


def escape_discord(text: str) -> str:
    """Markdown specials backslashed (``<`` too, which stops ``<@id>`` and ``<#id>``), and
    ``@`` followed by a zero-width space so ``@everyone``/``@here`` are plain words."""
    return escape_markdown(text).replace("@", "@" + ZWSP)


def fit(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in "…" when cut, never after a lone backslash
    (which would escape the ellipsis instead of the character it was for)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if (len(cut) - len(cut.rstrip("\\"))) % 2:
        cut = cut[:-1]
    return cut + "…"


class DiscordConfig(SinkConfig):
    type: Literal["discord"]
    url: SecretUrl
    format: Literal["markdown", "text"] = "markdown"


class DiscordOptions(Model):
    """What a notify entry's ``options:`` may hold for Discord."""

    silent: bool = False
    embed: bool = False


class DiscordSink(Sink):
    type_name = "discord"
    config_model = DiscordConfig
    options_model = DiscordOptions
    default_rate: ClassVar[str | None] = "30/min"

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, DiscordConfig)
        url = config.url.get_secret_value()
        self.http = HttpClient(session, url, service=name, timeout=config.timeout.total_seconds())

    def escape(self, text: str) -> str:
        return escape_discord(text) if self.format == "markdown" else text

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        n = notification
        payload: dict[str, Any] = {"allowed_mentions": {"parse": []}}
        silent = bool(n.options.get("silent")) or n.priority in ("min", "low")
        flags = SUPPRESS_NOTIFICATIONS if silent else 0
        if n.options.get("embed"):
            payload["embeds"] = [self.embed(n)]
        else:
            payload["content"] = self.content(n)
            flags |= SUPPRESS_EMBEDS
        if flags:
            payload["flags"] = flags
        # As a parameter, not in the path: the configured URL may have one (thread_id).
        resp = await self.http.request("POST", "", params={"wait": "true"}, json=payload)
        if not resp.ok:
            raise self.failure(resp)
        answered(resp, self.name, "id")  # with ?wait=true Discord answers the message

    def markdown(self, message: str) -> str:
        """The message as Discord markdown: a text-format message is escaped whole."""
        return message if self.format == "markdown" else escape_discord(message)

    def content(self, n: Notification) -> str:
        lines = [f"**{escape_discord(n.title)}**"] if n.title else []
        lines += [self.markdown(n.message)] if n.message else []
        link = _link(n.url)
        text = fit("\n".join(lines), CONTENT_LIMIT - (len(link) + 1 if link else 0))
        return "\n".join(filter(None, [text, link]))

    def embed(self, n: Notification) -> dict[str, Any]:
        embed: dict[str, Any] = {"color": COLOURS.get(n.priority, COLOURS["default"])}
        if n.title:
            embed["title"] = fit(escape_discord(n.title), TITLE_LIMIT)
        if n.message:
            embed["description"] = fit(self.markdown(n.message), DESCRIPTION_LIMIT)
        if n.url and re.match(r"https?://\S+$", n.url):
            embed["url"] = n.url
        return embed

    def failure(self, resp: Response) -> RemoteError:
        """Discord's answer as our error; its bodies never repeat the webhook's token."""
        reason = _reason(resp)
        what = f"{resp.what} → HTTP {resp.status}" + (f" ({reason})" if reason else "")
        if resp.status == 429:
            body = _json_object(resp)
            hint = body.get("retry_after")
            wait = float(hint) if isinstance(hint, int | float) else retry_after(resp.headers)
            return TransientError(what, service=self.name, status=429, retry_after=wait)
        if resp.status in (401, 403, 404):  # a deleted webhook, or a wrong token in its URL
            fix = "Discord refused the webhook: create a new one and set url to its URL"
            return AuthError(f"{what}: {fix}", service=self.name, status=resp.status)
        if resp.status >= 500 or not reason:
            return classify(resp, self.name, reason)
        return PermanentError(what, service=self.name, status=resp.status)


def _link(url: str | None) -> str:
    """The click URL in angle brackets (a link without a preview), if it is one."""
    return f"<{url}>" if url and re.match(r"https?://[^\s<>]+$", url) else ""


def _json_object(resp: Response) -> dict[str, Any]:
    try:
        body = resp.json("")
    except TransientError:
        return {}
    return body if isinstance(body, dict) else {}


def _reason(resp: Response) -> str:
    """``message`` of an error body, or its field errors: ``content: Must be 2000 or …``."""
    body = _json_object(resp)
    if isinstance(body.get("message"), str):
        return str(body["message"])
    fields = [f"{key}: {_first(value)}" for key, value in body.items() if key != "code"]
    return "; ".join(fields)[:300]


def _first(value: Any) -> str:
    while isinstance(value, list | dict) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
    return str(value)
