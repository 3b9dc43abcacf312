"""Gotify: post each notification to ``/message`` of a Gotify server, as an application.

    gotify:
      type: gotify
      url: https://gotify.example.org     # where Gotify is served, with its path prefix if any
      token: ${GOTIFY_APP_TOKEN}          # an application's token (a client token is refused)
      format: markdown                    # text (the default) or markdown

The token goes in the ``X-Gotify-Key`` header, never in the URL, so no access log shows
it. Markdown and the click URL travel in Gotify's ``extras`` (``client::display``,
``client::notification``); priorities map to Gotify's 0–10 as its Android app uses them
(1–3 silent, 4–7 with sound, 8–10 with sound and a pop-up). A notify entry may add
``options: {big_image_url: https://…}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr

from bot.config import HttpUrl, Model, SinkConfig
from bot.errors import AuthError, RemoteError
from bot.http import HttpClient, Response, classify
from bot.markup import fit, fit_bytes, hard_breaks
from bot.sinks.base import File, Notification, Sink, answered, read_options

PRIORITY = {"min": 1, "low": 3, "default": 5, "high": 8, "urgent": 10}
# Gotify itself sets no limit, but with MySQL it keeps a message in a TEXT column:
# the smallest of its databases, and a longer message fails there with HTTP 500.
MESSAGE_LIMIT = 65_535  # bytes
TITLE_LIMIT = 250  # characters; a title is one line on every Gotify client


class GotifyConfig(SinkConfig):
    type: Literal["gotify"]
    url: HttpUrl
    token: SecretStr
    format: Literal["text", "markdown"] = "text"


class GotifyOptions(Model):
    """What a notify entry's ``options:`` may hold for Gotify."""

    big_image_url: str | None = Field(None, pattern=r"^https?://")


class GotifySink(Sink):
    type_name = "gotify"
    config_model = GotifyConfig
    options_model = GotifyOptions
    default_rate = None  # Gotify documents no limit

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, GotifyConfig)
        self.http = HttpClient(
            session,
            config.url,
            service=name,
            headers={"X-Gotify-Key": config.token.get_secret_value()},
            timeout=config.timeout.total_seconds(),
        )

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        resp = await self.http.request("POST", "/message", json=self.payload(notification))
        if not resp.ok:
            raise self._error(resp)
        answered(resp, self.name, "id")  # Gotify answers the stored message

    def payload(self, n: Notification) -> dict[str, Any]:
        """Gotify's message body for ``n``."""
        options = read_options(GotifyOptions, n, self.name)
        title, message = fit(n.title, TITLE_LIMIT), n.message
        if not message.strip():  # Gotify refuses an empty message; it shows the app's name
            title, message = "", self.escape(title)  # as the title when there is none
        if self.format == "markdown":
            message = hard_breaks(message)
        content_type = "text/markdown" if self.format == "markdown" else "text/plain"
        extras: dict[str, Any] = {"client::display": {"contentType": content_type}}
        notification: dict[str, Any] = {}
        if n.url:
            notification["click"] = {"url": n.url}
        if options.big_image_url:
            notification["bigImageUrl"] = options.big_image_url
        if notification:
            extras["client::notification"] = notification
        return {
            "title": title,
            "message": fit_bytes(message, MESSAGE_LIMIT),
            "priority": PRIORITY.get(n.priority, 5),
            "extras": extras,
        }

    def _error(self, resp: Response) -> RemoteError:
        said = _description(resp)
        if resp.status == 401:
            return AuthError(
                f"{resp.what} → HTTP 401 ({said or 'Unauthorized'}): check the sink's token; "
                "it must be an application's token, not a client's",
                service=self.name,
                status=401,
            )
        return classify(resp, self.name, said)


def _description(resp: Response) -> str:
    """``errorDescription`` of Gotify's error body, when it is one."""
    try:
        data = json.loads(resp.body) if resp.is_json() else None
    except ValueError:
        return ""
    if isinstance(data, dict) and isinstance(data.get("errorDescription"), str):
        return str(data["errorDescription"])
    return ""
