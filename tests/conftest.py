"""Shared fixtures: the Mail.td simulator and a webhook receiver on loopback, and a
helper that writes a configuration for them and opens the pipeline on it; `inboxbot run`
in a subprocess (the ``daemon`` fixture)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.app import load, running
from bot.pipeline import Pipeline
from bot.sim.mailtd import MailTdSim, SimAccount
from bot.sim.rocketchat import RocketChatSim, SimRoom, SimUser
from bot.sim.webhook import HookReceiver
from tests.sim.shared import TickingClock

TEMPLATE = """\
{% block title %}{{ item.subject }}{% endblock %}
{% block message %}{{ item.text | truncate(100) }}{% endblock %}
"""

DEFAULT_RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
  then: [mark_read]
"""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session, for clients under test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[MailTdSim]:
    simulator = MailTdSim()
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def hook() -> AsyncIterator[HookReceiver]:
    receiver = HookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@dataclass
class Setup:
    """A configuration on disk for the simulator and the receiver."""

    tmp: Path
    sim: MailTdSim
    hook: HookReceiver
    account: SimAccount

    def write(
        self,
        rules: str = DEFAULT_RULES,
        *,
        backlog: str = "notify",
        extra: str = "",
        rate: int = 4,
        sinks: str = "",
    ) -> Path:
        """``sinks``: more lines under ``sinks:``, indented by two spaces."""
        (self.tmp / "templates").mkdir(exist_ok=True)
        (self.tmp / "templates" / "email.j2").write_text(TEMPLATE)
        (self.tmp / "rules.yaml").write_text(rules)
        config = self.tmp / "inboxbot.yaml"
        config.write_text(
            f"""\
accounts:
  inbox:
    type: mailtd
    base_url: {self.sim.base_url}
    account_id: {self.account.address}
    token: {self.account.token}
    every: 1s
    timeout: 2s
    rate: {rate}
sinks:
  hooks: {{type: webhook, url: "{self.hook.url}"}}
  screen: {{type: console}}
{sinks}rules: [rules.yaml]
templates: [templates]
backlog: {backlog}
{extra}"""
        )
        return config

    @asynccontextmanager
    async def pipeline(self, rules: str = DEFAULT_RULES, **kwargs: str) -> AsyncIterator[Pipeline]:
        loaded = load(self.write(rules, **kwargs))
        async with running(loaded, self.tmp / "state.db") as pipe:
            yield pipe


@pytest.fixture
def setup(tmp_path: Path, sim: MailTdSim, hook: HookReceiver) -> Setup:
    return Setup(tmp_path, sim, hook, sim.add_account("alice@mail.td"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`inboxbot run` in a subprocess with a notify socket and an HTTP port."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.port = config, free_port()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp / "notify.sock"))
        self.notify.setblocking(False)
        self.messages: list[str] = []
        self.log = tmp / "daemon.log"
        self.log.touch()

    async def start(self) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.getsockname(), "WATCHDOG_USEC": "400000",
               "INBOXBOT_LISTEN": f"127.0.0.1:{self.port}"}  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(self.config), "run",
                stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env, cwd=self.config.parent,
            )  # fmt: skip

    def received(self) -> list[str]:
        while True:
            try:
                self.messages += self.notify.recv(4096).decode().splitlines()
            except BlockingIOError:
                return self.messages

    async def wait_for(self, line: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(m.startswith(line) for m in self.received()) or line in self.log.read_text():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"never saw {line!r}; notify: {self.received()[-5:]}\n{self.log.read_text()}"
        )

    async def get(self, path: str) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.get(f"http://127.0.0.1:{self.port}{path}") as r,
        ):
            return r.status, await r.text()


@pytest.fixture
async def daemon(setup: Setup) -> AsyncIterator[Daemon]:
    d = Daemon(setup.write(), setup.tmp)
    yield d
    if d.proc.returncode is None:
        d.proc.kill()
        await d.proc.wait()
    d.notify.close()


# Rocket.Chat: a simulator, Alice (the account) and Bob, and their DM


@pytest.fixture
async def rc() -> AsyncIterator[RocketChatSim]:
    async with RocketChatSim(rate_limit=100_000, clock=TickingClock()) as simulator:
        yield simulator


@pytest.fixture
def me(rc: RocketChatSim) -> SimUser:
    return rc.add_user("alice", "Alice Liddell", password="wonderland")


@pytest.fixture
def bob(rc: RocketChatSim) -> SimUser:
    return rc.add_user("bob", "Bob Builder")


@pytest.fixture
def dm(rc: RocketChatSim, me: SimUser, bob: SimUser) -> SimRoom:
    return rc.direct(me, bob)
