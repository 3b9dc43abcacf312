"""A simulator of Slack incoming webhooks, served by aiohttp.

It models what Slack's documentation (Sending messages using incoming webhooks, Handling
errors, Formatting text for app surfaces, Rate limits) describes:

- ``POST /services/{team}/{bot}/{secret}`` with JSON (or a form's ``payload=``); every
  answer is a short plain-text body, like the real ``ok``;
- errors: an unknown or revoked webhook → 404 ``no_service``, a wrong secret → 403
  ``invalid_token``, a posting restriction → 403 ``action_prohibited``, a deleted channel
  → 404 ``channel_not_found``, an archived one → 410 ``channel_is_archived``, a body that
  is not JSON → 400 ``invalid_payload``, no ``text`` (nor blocks or attachments) → 400
  ``no_text``;
- text over 40,000 characters is truncated, silently, as Slack does (``truncated``);
- rate limit: one message a second per webhook with short bursts (a bucket of 3 that
  refills one a second) → 429 ``rate_limited`` with ``Retry-After`` in seconds;
- what a message does once shown: who it pings (``<!here>``, ``<!channel>``,
  ``<!everyone>``, ``<@U…>``, ``<!subteam^…>``; plain ``@here`` only with ``link_names``),
  its links (``<url>``, ``<url|text>``), and its formatted spans (mrkdwn ``*bold*``,
  ``_italic_``, ``~strike~``, `` `code` ``: a mark opens after the start of a line, a
  space or ASCII punctuation and before a non-space, and closes the other way round; a
  zero-width space counts as a letter);
- queued faults: ``status`` (``status``, ``body``), ``rate_limited`` (``retry_after``),
  and the shared ``html``, ``latency``, ``truncated``, ``reset``; a down switch;
  ``messages``, every accepted message.

Not modelled: blocks and attachments beyond their presence, threads, response_url.

    python -m bot.sim.slack --port 8083
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.sim.base import Fault, SimServer, proxy_page, serve_until_stopped, simulator_parser

TEXT_LIMIT = 40_000
BURST, REFILL = 3, 1.0  # messages, and messages a second
_PATH = re.compile(r"^/services/([^/]+/[^/]+)/")
_PINGS = re.compile(r"<(!here|!channel|!everyone|@[UW][A-Z0-9]+|!subteam\^[A-Z0-9]+)(?:\|[^>]*)?>")
_NAMED_PINGS = re.compile(r"(?<![\w@])@(here|channel|everyone)\b")
_LINKS = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")
_EDGE = re.escape(string.punctuation) + r"\s"


def _text(body: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


class SlackError(Exception):
    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass
class SimWebhook:
    team: str
    bot: str
    secret: str
    channel: str
    state: str = "active"  # active | revoked | restricted | channel_deleted | archived
    tokens: float = BURST
    refilled: float = 0.0

    @property
    def path(self) -> str:
        return f"/services/{self.team}/{self.bot}/{self.secret}"


@dataclass
class SentMessage:
    channel: str
    text: str  # as stored: cut at 40,000 characters
    mrkdwn: bool
    payload: dict[str, Any]
    truncated: bool = False
    pings: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def formatted(text: str) -> list[tuple[str, str]]:
    """The mrkdwn spans a client would format, as (mark, text inside)."""
    spans = []
    for mark in "*_~`":
        m = re.escape(mark)
        pattern = rf"(?:^|(?<=[{_EDGE}])){m}(?=[^\s{m}])([^\n]*?[^\s{m}]){m}(?=$|[{_EDGE}])"
        spans += [(mark, found.group(1)) for found in re.finditer(pattern, text, re.M)]
    return spans


_STATES = {
    "revoked": (404, "no_service"),
    "restricted": (403, "action_prohibited"),
    "channel_deleted": (404, "channel_not_found"),
    "archived": (410, "channel_is_archived"),
}


class SlackSim(SimServer):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.webhooks: dict[str, SimWebhook] = {}  # "T…/B…" → webhook
        self.messages: list[SentMessage] = []

    def add_webhook(self, channel: str = "#general") -> SimWebhook:
        hook = SimWebhook(_ident("T"), _ident("B"), secrets.token_hex(12), channel)
        hook.refilled = self.clock()
        self.webhooks[f"{hook.team}/{hook.bot}"] = hook
        return hook

    def url(self, hook: SimWebhook) -> str:
        return self.base_url + hook.path

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/services/{team}/{bot}/{secret}", self._incoming)

    def caller(self, request: web.Request) -> str | None:
        match = _PATH.match(request.path)
        return match.group(1) if match else None

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind == "html":
            return proxy_page(int(fault.params.get("status", 502)))
        if fault.kind == "rate_limited":
            wait = str(fault.params.get("retry_after", 1))
            return _text("rate_limited", 429, {"Retry-After": wait})
        status = int(fault.params.get("status", 500))
        return _text(str(fault.params.get("body", "rollup_error")), status)

    async def _incoming(self, request: web.Request) -> web.Response:
        try:
            hook = self._webhook(request.match_info)
            payload = await _payload(request)
            self._spend(hook)
        except SlackError as err:
            return _text(err.code, err.status, err.headers)
        self.messages.append(_message(hook, payload))
        return _text("ok", 200)

    def _webhook(self, info: Any) -> SimWebhook:
        hook = self.webhooks.get(f"{info['team']}/{info['bot']}")
        if hook is None:
            raise SlackError(404, "no_service")
        if not secrets.compare_digest(hook.secret, info["secret"]):
            raise SlackError(403, "invalid_token")
        if hook.state in _STATES:
            raise SlackError(*_STATES[hook.state])
        return hook

    def _spend(self, hook: SimWebhook) -> None:
        now = self.clock()
        hook.tokens = min(BURST, hook.tokens + (now - hook.refilled) * REFILL)
        hook.refilled = now
        if hook.tokens < 1:
            wait = max(1, math.ceil((1 - hook.tokens) / REFILL))
            raise SlackError(429, "rate_limited", {"Retry-After": str(wait)})
        hook.tokens -= 1


def _ident(prefix: str) -> str:
    """A Slack id: ``T`` (team) or ``B`` (bot) and ten upper-case letters or digits."""
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(10))


async def _payload(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        raw = str((await request.post()).get("payload", "")).encode()
    try:
        payload = json.loads(raw)
    except ValueError:
        raise SlackError(400, "invalid_payload") from None
    if not isinstance(payload, dict):
        raise SlackError(400, "invalid_payload")
    other = payload.get("blocks") or payload.get("attachments")
    if not str(payload.get("text") or "").strip() and not other:
        raise SlackError(400, "no_text")
    return payload


def _message(hook: SimWebhook, payload: dict[str, Any]) -> SentMessage:
    text = str(payload.get("text") or "")
    found = [m.group(1) for m in _PINGS.finditer(text)]
    if payload.get("link_names") in (True, 1, "1", "true"):
        found += [f"!{m.group(1)}" for m in _NAMED_PINGS.finditer(text)]
    links = [m.group(1) for m in _LINKS.finditer(text)]
    mrkdwn = payload.get("mrkdwn", True) is not False
    cut = len(text) > TEXT_LIMIT
    return SentMessage(hook.channel, text[:TEXT_LIMIT], mrkdwn, payload, cut, found, links)


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = SlackSim()
    hook = sim.add_webhook(args.channel)

    def banner() -> list[str]:
        return [f"Slack incoming-webhook simulator at {sim.base_url}", f"  url={sim.url(hook)}"]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Slack incoming webhook.", port=8083)
    parser.add_argument("--channel", default="#general", help="the webhook's channel")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
