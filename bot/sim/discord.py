"""A simulator of Discord's Execute Webhook endpoint, served by aiohttp.

It models what Discord's developer documentation (Execute Webhook, Rate Limits, Message
Formatting, JSON error codes) describes:

- ``POST /api/webhooks/{id}/{token}`` (also under ``/api/v{n}/``): an unknown id → 404
  ``{"message": "Unknown Webhook", "code": 10015}``, a wrong token → 401 ``{"message":
  "Invalid Webhook Token", "code": 50027}``; ``?wait=true`` → 200 with the message,
  without it → 204;
- validation, in the unversioned API's error shape: content over 2,000 characters → 400
  ``{"content": ["Must be 2000 or fewer in length."]}``; an embed title over 256, a
  description over 4,096, more than 10 embeds, an embed URL that is not http(s); neither
  content nor embeds → ``{"message": "Cannot send an empty message", "code": 50006}``;
  flags other than SUPPRESS_EMBEDS and SUPPRESS_NOTIFICATIONS; a body that is not JSON;
- who a message pings, as clients read it under ``allowed_mentions``: ``@everyone``,
  ``@here``, ``<@id>``, ``<@&id>`` in content, not when backslashed (``pings``);
- rate limits: 5 requests per 2 s per webhook, 30 messages per 60 s per channel → 429
  ``{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}``
  with ``Retry-After`` (whole seconds) and ``X-RateLimit-*`` headers;
- queued faults: ``status`` (``status``, ``message``), ``rate_limited`` (``retry_after``,
  ``global``), and the shared ``html``, ``latency``, ``truncated``, ``reset``; a down
  switch; ``messages``, every accepted message.

Not modelled: files, threads, components, usernames and avatars, markdown rendering.

    python -m bot.sim.discord --port 8082
"""

from __future__ import annotations

import argparse
import asyncio
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

CONTENT_LIMIT, TITLE_LIMIT, DESCRIPTION_LIMIT, MAX_EMBEDS = 2000, 256, 4096, 10
ALLOWED_FLAGS = (1 << 2) | (1 << 12)  # SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS
WEBHOOK_LIMIT, WEBHOOK_WINDOW = 5, 2.0
CHANNEL_LIMIT, CHANNEL_WINDOW = 30, 60.0
_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/(\d+)/")
_EVERYONE = re.compile(r"(?<!\\)@(everyone|here)\b")
_USER = re.compile(r"(?<!\\)<@!?(\d+)>")
_ROLE = re.compile(r"(?<!\\)<@&(\d+)>")


class ApiError(Exception):
    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(json.dumps(body))
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


def _form_error(field: str, message: str) -> ApiError:
    return ApiError(400, {field: [message]})


@dataclass
class SimWebhook:
    id: str
    token: str
    channel: str


@dataclass
class SentMessage:
    id: str
    webhook_id: str
    channel: str
    content: str
    embeds: list[dict[str, Any]]
    flags: int
    pings: list[str]  # "everyone", "here", "user:ID", "role:ID"
    payload: dict[str, Any]


def pings(content: str, allowed: Any) -> list[str]:
    """Who a client would notify for ``content`` under ``allowed_mentions`` (absent: all)."""
    allowed = allowed if isinstance(allowed, dict) else {"parse": ["everyone", "users", "roles"]}
    parse = allowed.get("parse") or []
    found = [m.group(1) for m in _EVERYONE.finditer(content)] if "everyone" in parse else []
    for kind, pattern, key in (("user", _USER, "users"), ("role", _ROLE, "roles")):
        ids = [m.group(1) for m in pattern.finditer(content)]
        found += [f"{kind}:{i}" for i in ids if key in parse or i in allowed.get(key, [])]
    return found


def _check_embed(index: int, embed: Any) -> None:
    if not isinstance(embed, dict):
        raise ApiError(400, {"embeds": {str(index): ["Must be an object."]}})
    limits = {"title": TITLE_LIMIT, "description": DESCRIPTION_LIMIT}
    for key, limit in limits.items():
        if len(str(embed.get(key, ""))) > limit:
            error = {key: [f"Must be {limit} or fewer in length."]}
            raise ApiError(400, {"embeds": {str(index): error}})
    if "url" in embed and not re.match(r"https?://\S+$", str(embed["url"])):
        raise ApiError(400, {"embeds": {str(index): {"url": ["Not a well formed URL."]}}})


def _validate(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise ApiError(400, {"message": "The request body contains invalid JSON.", "code": 50109})
    content, embeds = str(payload.get("content") or ""), payload.get("embeds") or []
    if len(content) > CONTENT_LIMIT:
        raise _form_error("content", f"Must be {CONTENT_LIMIT} or fewer in length.")
    if not isinstance(embeds, list) or len(embeds) > MAX_EMBEDS:
        raise _form_error("embeds", f"Must be {MAX_EMBEDS} or fewer in length.")
    for index, embed in enumerate(embeds):
        _check_embed(index, embed)
    if not content.strip() and not embeds:
        raise ApiError(400, {"message": "Cannot send an empty message", "code": 50006})
    if int(payload.get("flags") or 0) & ~ALLOWED_FLAGS:
        raise _form_error("flags", "Invalid flags")


class DiscordSim(SimServer):
    window_seconds = WEBHOOK_WINDOW

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.webhooks: dict[str, SimWebhook] = {}
        self.messages: list[SentMessage] = []
        self.windows: dict[str, deque[float]] = {}

    def add_webhook(self, channel: str = "general") -> SimWebhook:
        snowflake = str(10**18 + secrets.randbelow(10**18))
        hook = SimWebhook(snowflake, secrets.token_urlsafe(51), channel)
        self.webhooks[hook.id] = hook
        return hook

    def url(self, hook: SimWebhook) -> str:
        return f"{self.base_url}/api/webhooks/{hook.id}/{hook.token}"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/webhooks/{id}/{token}", self._execute)
        router.add_post("/api/v{version:\\d+}/webhooks/{id}/{token}", self._execute)

    def caller(self, request: web.Request) -> str | None:
        match = _PATH.match(request.path)
        return match.group(1) if match else None

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind == "html":
            return proxy_page(int(fault.params.get("status", 502)), server="cloudflare")
        if fault.kind == "rate_limited":
            wait = float(fault.params.get("retry_after", 1.5))
            return _limited(wait, bool(fault.params.get("global", False))).response()
        status = int(fault.params.get("status", 500))
        message = str(fault.params.get("message", f"{status}: {HTTPStatus(status).phrase}"))
        return ApiError(status, {"message": message, "code": 0}).response()

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        try:
            hook = self._webhook(request.match_info["id"], request.match_info["token"])
            try:
                payload = json.loads(await request.read())
            except ValueError:
                payload = None
            _validate(payload)
            self._spend(f"webhook:{hook.id}", WEBHOOK_LIMIT, WEBHOOK_WINDOW)
            self._spend(f"channel:{hook.channel}", CHANNEL_LIMIT, CHANNEL_WINDOW)
        except ApiError as err:
            return err.response()
        message = self._store(hook, payload)
        if request.query.get("wait", "").lower() not in ("true", "1"):
            return web.Response(status=204)
        return web.json_response(self._message_json(message))

    def _webhook(self, hook_id: str, token: str) -> SimWebhook:
        hook = self.webhooks.get(hook_id)
        if hook is None:
            raise ApiError(404, {"message": "Unknown Webhook", "code": 10015})
        if not secrets.compare_digest(hook.token, token):
            raise ApiError(401, {"message": "Invalid Webhook Token", "code": 50027})
        return hook

    def _spend(self, key: str, limit: int, window: float) -> None:
        now, sent = self.clock(), self.windows.setdefault(key, deque())
        while sent and sent[0] <= now - window:
            sent.popleft()
        if len(sent) >= limit:
            raise _limited(round(sent[0] + window - now, 3), False)
        sent.append(now)

    def _store(self, hook: SimWebhook, payload: dict[str, Any]) -> SentMessage:
        content = str(payload.get("content") or "")
        message = SentMessage(
            id=str(10**18 + len(self.messages)),
            webhook_id=hook.id,
            channel=hook.channel,
            content=content,
            embeds=list(payload.get("embeds") or []),
            flags=int(payload.get("flags") or 0),
            pings=pings(content, payload.get("allowed_mentions")),
            payload=payload,
        )
        self.messages.append(message)
        return message

    def _message_json(self, m: SentMessage) -> dict[str, Any]:
        users = [p.split(":")[1] for p in m.pings if p.startswith("user:")]
        return {
            "id": m.id, "type": 0, "channel_id": m.channel, "webhook_id": m.webhook_id,
            "content": m.content, "embeds": m.embeds, "flags": m.flags,
            "mention_everyone": any(p in ("everyone", "here") for p in m.pings),
            "mentions": [{"id": u} for u in users],
            "mention_roles": [p.split(":")[1] for p in m.pings if p.startswith("role:")],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(self.clock())),
        }  # fmt: skip


def _limited(wait: float, is_global: bool) -> ApiError:
    body = {"message": "You are being rate limited.", "retry_after": wait, "global": is_global}
    headers = {
        "Retry-After": str(math.ceil(wait)),
        "X-RateLimit-Limit": str(WEBHOOK_LIMIT),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{wait:.3f}",
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    return ApiError(429, body, headers)


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = DiscordSim()
    hook = sim.add_webhook(args.channel)

    def banner() -> list[str]:
        return [f"Discord webhook simulator at {sim.base_url}", f"  url={sim.url(hook)}"]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Discord webhook.", port=8082)
    parser.add_argument("--channel", default="general", help="the webhook's channel")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
