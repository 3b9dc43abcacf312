"""What the scenarios share: counting fakes (a webhook receiver and a Mail.td simulator
that stamp what they saw, independently of inboxbot's logs), `inboxbot run` as a child
process, and a configuration on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.sim.mailtd import MailTdSim, SimAccount
from bot.sim.webhook import HookReceiver


@dataclass
class Result:
    """One row of proof/RESULTS.md."""

    scenario: str
    tried: str
    counts: dict[str, Any]
    passed: bool
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingReceiver(HookReceiver):
    """A webhook receiver that stamps each accepted POST (monotonic seconds) and can be
    told to answer 503 (``unavailable``); ``close``/``reopen`` make its port refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.item_keys: dict[str, set[str]] = {}  # the idempotency keys each item came with
        self.unavailable = False
        self.port = 0

    async def _hook(self, request: web.Request) -> web.Response:
        if self.unavailable:
            return web.json_response({"error": "down"}, status=503)
        response = await super()._hook(request)
        if response.status == 200:
            self.times.append(time.monotonic())
            item = str(self.received[-1].get("item_id"))
            key = request.headers.get("Idempotency-Key", "")
            self.item_keys.setdefault(item, set()).add(key)
        return response

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        url = await super().start(host, port or self.port)
        assert self.runner is not None
        self.port = int(self.runner.addresses[0][1])
        return url

    async def close(self) -> None:
        await self.stop()
        self.runner = None

    def first_delivery(self) -> dict[str, float]:
        first: dict[str, float] = {}
        for body, moment in zip(self.received, self.times, strict=True):
            first.setdefault(str(body["item_id"]), moment)
        return first


class CountingMailTd(MailTdSim):
    """The Mail.td simulator, stamping each mark_read and delete per message id."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acted: list[tuple[str, str, float]] = []  # (action, message id, when)
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        url = await super().start(host, port or self.port)
        self.port = int(url.rpartition(":")[2])
        return url

    async def _mark_read(self, request: web.Request) -> web.Response:
        response = await super()._mark_read(request)
        self.acted.append(("mark_read", request.match_info["id"], time.monotonic()))
        return response

    async def _mark_many(self, request: web.Request) -> web.Response:
        response = await super()._mark_many(request)
        body = await request.json()
        for message_id in body.get("ids") or []:
            self.acted.append(("mark_read", str(message_id), time.monotonic()))
        return response

    async def _delete(self, request: web.Request) -> web.Response:
        response = await super()._delete(request)
        self.acted.append(("delete", request.match_info["id"], time.monotonic()))
        return response


RATE = 10  # each feed's requests a second (``rate:``)
TEMPLATE = """\
{% block title %}{{ item.subject }}{% endblock %}
{% block message %}{{ item.text | truncate(100) }}{% endblock %}
"""


def write_config(
    tmp: Path,
    sim: MailTdSim,
    accounts: list[SimAccount],
    hook_url: str,
    rules: str,
    *,
    extra: str = "",
    account_extra: str = "",
) -> Path:
    """inboxbot.yaml, rules.yaml and a template in ``tmp``; one Mail.td feed per account."""
    (tmp / "templates").mkdir(parents=True, exist_ok=True)
    (tmp / "templates" / "email.j2").write_text(TEMPLATE)
    (tmp / "rules.yaml").write_text(rules)
    feeds = "".join(
        f"""\
  box{n}:
    type: mailtd
    base_url: {sim.base_url}
    account_id: {a.address}
    token: {a.token}
    every: 1s
    timeout: 3s
    rate: {RATE}
{account_extra}"""
        for n, a in enumerate(accounts)
    )
    config = tmp / "inboxbot.yaml"
    config.write_text(
        f'accounts:\n{feeds}sinks:\n  hooks: {{type: webhook, url: "{hook_url}"}}\n'
        f"rules: [rules.yaml]\ntemplates: [templates]\nbacklog: notify\n{extra}"
    )
    return config


class Inboxbot:
    """`python -m bot --config F run` as a child process; stderr goes to ``log``."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.config, self.log, self.port = config, log, free_port()
        self.env = {"INBOXBOT_LOG_LEVEL": "info", "INBOXBOT_LISTEN": f"127.0.0.1:{self.port}",
                    **(env or {})}  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(self.config), "run",
                stdout=log, stderr=log, env={**os.environ, **self.env}, cwd=self.config.parent,
            )  # fmt: skip

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, seconds: float = 15) -> int:
        """SIGTERM, then SIGKILL after ``seconds``; the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), seconds)
            except TimeoutError:
                await self.kill()
        return self.proc.returncode if self.proc.returncode is not None else -9

    async def get(self, path: str) -> tuple[int, str]:
        """GET on the daemon's HTTP port; status 0 when it does not answer."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.get(f"http://127.0.0.1:{self.port}{path}") as r,
            ):
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0, ""


async def until(condition: Callable[[], bool], seconds: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()


def add_mail(sim: MailTdSim, account: SimAccount, subject: str) -> str:
    return sim.add_message(account, sender="s@example.com", subject=subject, text_body="b")
