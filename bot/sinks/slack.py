"""Slack: an incoming webhook, with the notification as mrkdwn text.

    sl:
      type: slack
      url: ${SLACK_WEBHOOK_URL}   # https://hooks.slack.com/services/T…/B…/…: a secret
      format: markdown            # markdown (default: Slack's mrkdwn) | text
      max_length: 4000            # characters; Slack cuts at 40,000

The title is a bold line, then the message, then the click URL. Slack has no priority;
``high`` and ``urgent`` start the title with an emoji (:warning:, :rotating_light:).

Escaping follows Slack's "Formatting text" guide: ``&``, ``<`` and ``>`` become
``&amp;``, ``&lt;``, ``&gt;``, which alone stops ``<!here>``, ``<@U…>`` and links (a
plain ``@here`` never pings: we do not send ``link_names``). mrkdwn has no escape for
``*``, ``_``, ``~`` and backticks, so item content gets a zero-width space (U+200B) on
each side of them. A mark formats only when its outer side is set off (line start, a
space, punctuation) and its inner side touches text: with U+200B on both sides one of
the two fails, whether Slack takes it for a letter or for a space, and the text still
reads as written. In ``text`` format the whole message goes with ``mrkdwn: false``
(``&<>`` still escaped). Link unfurling is off: Slack would otherwise open item links,
one-time links included.

Errors (plain-text bodies): 429 waits ``Retry-After``; any 403 (``invalid_token``,
``action_prohibited``…) and 404 ``no_service`` are auth errors, since only a new or
re-enabled webhook URL helps; ``channel_not_found``, ``channel_is_archived`` and
``invalid_payload``/``no_text`` are permanent; 5xx are transient.

Slack truncates text over 40,000 characters, but advises 4,000 for readability (longer
messages are folded behind "Show more"), hence the default; up to 40,000 may be set.
``default_rate``: Slack allows one incoming-webhook message per second, with short bursts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field

from bot.config import SecretUrl, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify
from bot.sinks.base import File, Notification, Sink

HARD_LIMIT = 40_000
ZWSP = "\u200b"
MARKERS = {"high": ":warning: ", "urgent": ":rotating_light: "}
_FORMATTING = re.compile(r"([*_~`])")


def escape_control(text: str) -> str:
    """Slack's three control characters as the entities it decodes."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_mrkdwn(text: str) -> str:
    return _FORMATTING.sub(ZWSP + r"\1" + ZWSP, escape_control(text))


def fit(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in "…" when cut, never inside ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


class SlackConfig(SinkConfig):
    type: Literal["slack"]
    url: SecretUrl
    format: Literal["markdown", "text"] = "markdown"
    max_length: int = Field(4000, ge=100, le=HARD_LIMIT)


class SlackSink(Sink):
    type_name = "slack"
    config_model = SlackConfig
    default_rate: ClassVar[str | None] = "1/s"

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, SlackConfig)
        self.max_length = config.max_length
        url = config.url.get_secret_value()
        self.http = HttpClient(session, url, service=name, timeout=config.timeout.total_seconds())

    def escape(self, text: str) -> str:
        return escape_mrkdwn(text) if self.format == "markdown" else text

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        payload: dict[str, Any] = {
            "text": self.text(notification),
            "mrkdwn": self.format == "markdown",
            "unfurl_links": False,
            "unfurl_media": False,
        }
        resp = await self.http.request("POST", "", json=payload)
        if not resp.ok:
            raise self.failure(resp)
        if not resp.body.strip() or b"<html" in resp.body[:500].lower():  # Slack says "ok"
            raise TransientError(f"{resp.what} → HTTP {resp.status} without Slack's answer: "
                                 "a proxy's page or an empty body", service=self.name,
                                 status=resp.status)  # fmt: skip

    def text(self, n: Notification) -> str:
        marker = MARKERS.get(n.priority, "")
        if self.format == "markdown":
            lines = [f"*{marker}{escape_mrkdwn(n.title)}*"] if n.title else []
            lines += [n.message] if n.message else []
        else:
            title = marker + n.title if n.title else ""
            lines = [escape_control(line) for line in (title, n.message) if line]
        link = f"<{escape_control(n.url).replace('|', '%7C')}>" if n.url else ""
        text = fit("\n".join(lines), self.max_length - (len(link) + 1 if link else 0))
        return "\n".join(filter(None, [text, link]))

    def failure(self, resp: Response) -> RemoteError:
        """Slack's plain-text error code as our error (it never repeats the URL)."""
        code = resp.body[:100].decode("utf-8", "replace").strip()
        code = code if re.fullmatch(r"[a-z_]+", code) else ""
        what = f"{resp.what} → HTTP {resp.status}" + (f" ({code})" if code else "")
        if resp.status == 403 or code == "no_service":
            fix = (
                "Slack refused the webhook (revoked, disabled or restricted): set url to a new one"
            )
            return AuthError(f"{what}: {fix}", service=self.name, status=resp.status)
        if resp.status in (404, 410) and code:
            fix = "the webhook's channel is gone or archived: create a webhook for another"
            return PermanentError(f"{what}: {fix}", service=self.name, status=resp.status)
        return classify(resp, self.name, code)
