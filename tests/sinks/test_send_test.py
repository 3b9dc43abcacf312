"""`inboxbot send-test SINK` as a user runs it, against the fake of every HTTP target:
"sent" and exit 0, or the exact reason and exit 1 (mqtt, smtp and matrix are run
against their real servers in their own test modules)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.sim.discord import DiscordSim
from bot.sim.gotify import GotifySim
from bot.sim.ntfy import NtfySim
from bot.sim.rocketchat import RocketChatSim
from bot.sim.slack import SlackSim
from bot.sim.telegram import TelegramSim
from tests.test_tools import inboxbot


@dataclass
class Target:
    sink: str  # the sink's keys, with {secret} where the credential goes
    secret: str
    received: Callable[[], int]


@asynccontextmanager
async def ntfy() -> AsyncIterator[Target]:
    async with NtfySim(default_access="deny-all") as sim:
        sim.add_user("alice")
        sim.allow("alice", "inbox", "read-write")
        token = sim.add_token("alice")
        yield Target(f'type: ntfy, url: "{sim.base_url}/inbox", token: "{{secret}}"', token,
                     lambda: len(sim.messages("inbox")))  # fmt: skip


@asynccontextmanager
async def gotify() -> AsyncIterator[Target]:
    async with GotifySim() as sim:
        app = sim.add_app("inboxbot")
        yield Target(f'type: gotify, url: "{sim.base_url}", token: "{{secret}}"', app.token,
                     lambda: len(sim.messages()))  # fmt: skip


@asynccontextmanager
async def telegram() -> AsyncIterator[Target]:
    async with TelegramSim() as sim:
        sim.add_chat("4242")
        token = sim.add_bot()
        yield Target(f'type: telegram, base_url: "{sim.base_url}", token: "{{secret}}", '
                     'chat_id: "4242"', token, lambda: len(sim.messages))  # fmt: skip


@asynccontextmanager
async def rocketchat() -> AsyncIterator[Target]:
    async with RocketChatSim() as sim:
        bot = sim.add_user("inboxbot")
        sim.add_user("alice")
        yield Target(f'type: rocketchat, base_url: "{sim.base_url}", user_id: {bot.id}, '
                     'token: "{secret}", channel: "@alice"', bot.token,
                     lambda: len(sim.posted))  # fmt: skip


@asynccontextmanager
async def discord() -> AsyncIterator[Target]:
    async with DiscordSim() as sim:
        hook = sim.add_webhook()
        url = sim.url(hook)
        base, _, token = url.rpartition("/")
        yield Target(f'type: discord, url: "{base}/{{secret}}"', token,
                     lambda: len(sim.messages))  # fmt: skip


@asynccontextmanager
async def slack() -> AsyncIterator[Target]:
    async with SlackSim() as sim:
        url = sim.url(sim.add_webhook())
        base, _, token = url.rpartition("/")
        yield Target(f'type: slack, url: "{base}/{{secret}}"', token,
                     lambda: len(sim.messages))  # fmt: skip


TARGETS: dict[str, Callable[[], Any]] = {
    "ntfy": ntfy, "gotify": gotify, "telegram": telegram, "rocketchat": rocketchat,
    "discord": discord, "slack": slack,
}  # fmt: skip


def config(tmp: Path, target: Target, secret: str) -> str:
    (tmp / "templates").mkdir(exist_ok=True)
    path = tmp / "inboxbot.yaml"
    sink = target.sink.replace("{secret}", secret)
    path.write_text(f"accounts: {{}}\nsinks:\n  out: {{{sink}}}\nrules: []\n")
    return str(path)


@pytest.mark.parametrize("kind", TARGETS)
async def test_send_test_sends_or_says_exactly_why_not(kind: str, tmp_path: Path) -> None:
    async with TARGETS[kind]() as target:
        code, out = await inboxbot("--config", config(tmp_path, target, target.secret),
                                   "send-test", "out")  # fmt: skip
        assert (code, out.strip()) == (0, f"sink out ({kind}): sent")
        assert target.received() == 1
        wrong = "wrong" + target.secret[5:]
        code, out = await inboxbot("--config", config(tmp_path, target, wrong), "send-test", "out")
        assert code == 1 and out.startswith(f"sink out ({kind}): not sent: out: "), out
        assert "credentials refused" in out, out
        assert wrong not in out and target.secret not in out
        assert target.received() == 1
