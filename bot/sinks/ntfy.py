"""ntfy: publish each notification as JSON to the server's root, for the topic in ``url``.

    phone:
      type: ntfy
      url: https://ntfy.sh/alice-inbox    # the server, then the topic
      token: ${NTFY_TOKEN}                # or username: alice, password: ${NTFY_PASSWORD}
      format: markdown                    # text (the default) or markdown

A rule's notify entry may add ``options: {tags: [email, warning], icon: https://…/i.png,
actions: [{action: view, label: Open, url: https://…}]}``: at most three ``view`` or
``http`` buttons, as ntfy documents them. Priorities map to ntfy's 1–5 and the item's URL
is the click target. ntfy turns a message longer than 4,096 bytes into an attachment
nobody reads on a lock screen, so it is cut to fit. The topic travels in the body (on a
public server its name is the secret), so logs show only ``POST /``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config import Model, SinkConfig
from bot.errors import AuthError, QuotaError, RemoteError, TransientError
from bot.http import HttpClient, Response, classify, retry_after
from bot.markup import fit, fit_bytes, hard_breaks
from bot.sinks.base import File, Notification, Sink, answered, read_options

TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
PRIORITY = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5}
MESSAGE_LIMIT = 4096  # bytes; ntfy's message-size-limit
JSON_LIMIT = 2 * MESSAGE_LIMIT  # ntfy refuses a larger JSON body (413, code 41303)
TITLE_LIMIT = 250  # ntfy sets none; a phone shows one line, and the JSON body has a cap
REFILL = 5.0  # s; ntfy's request bucket gains one request every 5 s, and says no more
QUOTA_CODES = frozenset({42905, 42908})  # daily bandwidth, daily messages: reset at 0:00 UTC


class NtfyConfig(SinkConfig):
    type: Literal["ntfy"]
    url: str
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    format: Literal["text", "markdown"] = "text"

    @field_validator("url")
    @classmethod
    def _server_and_topic(cls, url: str) -> str:
        parts = urlsplit(url)
        topic = parts.path.rstrip("/").rpartition("/")[2]
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("write the server and the topic, e.g. https://ntfy.sh/alice-inbox")
        if not TOPIC.fullmatch(topic):
            raise ValueError("the URL must end with a topic: 1-64 letters, digits, - or _")
        return url

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if self.token is not None and (self.username or self.password):
            raise ValueError("give either token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username and ":" in self.username:
            raise ValueError("a username cannot hold a colon")
        return self

    def server(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/').rpartition('/')[0]}"

    def topic(self) -> str:
        return urlsplit(self.url).path.rstrip("/").rpartition("/")[2]


class ViewAction(Model):
    action: Literal["view"]
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    clear: bool = False


class HttpAction(Model):
    action: Literal["http"]
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    clear: bool = False

    @model_validator(mode="after")
    def _no_body_to_get(self) -> Self:
        if self.method.upper() in ("GET", "HEAD") and self.body:
            raise ValueError(f"an http action with method {self.method} cannot have a body")
        return self


Action = Annotated[ViewAction | HttpAction, Field(discriminator="action")]


class NtfyOptions(Model):
    """What a notify entry's ``options:`` may hold for ntfy."""

    tags: list[str] = Field(default_factory=list)
    icon: str | None = Field(None, pattern=r"^https?://")
    actions: list[Action] = Field(default_factory=list, max_length=3)


class NtfySink(Sink):
    type_name = "ntfy"
    config_model = NtfyConfig
    options_model = NtfyOptions
    default_rate = "12/min"  # ntfy.sh: a burst of 60 requests, then one every 5 s

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, NtfyConfig)
        self.topic = config.topic()
        self.http = HttpClient(
            session,
            config.server(),
            service=name,
            headers=_auth_headers(config),
            timeout=config.timeout.total_seconds(),
        )

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        body = _encode(self.payload(notification))
        resp = await self.http.request(
            "POST", "/", data=body, headers={"Content-Type": "application/json"}
        )
        if not resp.ok:
            raise self._error(resp)
        answered(resp, self.name, "id")  # ntfy answers the stored message

    def payload(self, n: Notification) -> dict[str, Any]:
        """ntfy's JSON publish body for ``n``, within its message and body limits."""
        options = read_options(NtfyOptions, n, self.name)
        title, message = fit(n.title, TITLE_LIMIT), n.message
        if not message.strip():  # ntfy would show "triggered": the title says more
            title, message = "", self.escape(title)
        if self.format == "markdown":
            message = hard_breaks(message)
        payload: dict[str, Any] = {
            "topic": self.topic,
            "title": title,
            "message": _cut(message, MESSAGE_LIMIT),
            "priority": PRIORITY.get(n.priority, 3),
            "tags": options.tags,
            "click": n.url,
            "icon": options.icon,
            "actions": [a.model_dump(exclude_defaults=True) for a in options.actions],
            "markdown": self.format == "markdown",
        }
        payload = {k: v for k, v in payload.items() if v or k == "message"}
        over = len(_encode(payload)) - JSON_LIMIT
        if over > 0:  # JSON escaping (quotes, newlines, Markdown's backslashes) costs too
            size = len(payload["message"].encode())
            # Each byte cut saves at least one encoded byte: one more cut is enough.
            payload["message"] = _cut(payload["message"], max(0, size - over))
        return payload

    def _error(self, resp: Response) -> RemoteError:
        code, text = _ntfy_error(resp)
        said = f"{resp.what} → HTTP {resp.status}" + (f" (ntfy {code}: {text})" if code else "")
        if resp.status in (401, 403):
            fix = (
                "check the sink's token or username/password"
                if resp.status == 401
                else "this user may not publish to the topic: grant it write access"
            )
            return AuthError(f"{said}: {fix}", service=self.name, status=resp.status)
        if resp.status == 429 and code in QUOTA_CODES:
            return QuotaError(said, service=self.name, status=429, retry_after=_until_reset())
        if resp.status == 429:
            hint = retry_after(resp.headers) or REFILL
            return TransientError(said, service=self.name, status=429, retry_after=hint)
        return classify(resp, self.name, f"ntfy {code}: {text}" if code else "")


def _auth_headers(config: NtfyConfig) -> dict[str, str]:
    if config.token is not None:
        return {"Authorization": f"Bearer {config.token.get_secret_value()}"}
    if config.username is not None and config.password is not None:
        pair = f"{config.username}:{config.password.get_secret_value()}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
    return {}


def _encode(payload: Mapping[str, Any]) -> bytes:
    # Raw UTF-8, not \u escapes: the JSON body limit counts bytes.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes, never ending in half a Markdown escape."""
    cut = fit_bytes(text, limit)
    if cut == text:
        return text
    kept = cut.removesuffix("…")
    if (len(kept) - len(kept.rstrip("\\"))) % 2:  # a lone backslash would show before "…"
        kept = kept[:-1]
    return kept + "…"


def _ntfy_error(resp: Response) -> tuple[int | None, str]:
    """The ``code`` and ``error`` of ntfy's error body, when it is one."""
    try:
        data = json.loads(resp.body) if resp.is_json() else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("code"), int):
        return None, ""
    return data["code"], str(data.get("error", ""))


def _until_reset(now: datetime | None = None) -> float:
    """Seconds until ntfy resets its daily visitor limits (0:00 UTC by default)."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
