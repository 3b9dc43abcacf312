"""Shared fixtures: the Mail.td simulator and a webhook receiver on loopback, and a
helper that writes a configuration for them and opens the pipeline on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.app import load, running
from bot.pipeline import Pipeline
from bot.sim.mailtd import MailTdSim, SimAccount
from bot.sim.webhook import HookReceiver

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
