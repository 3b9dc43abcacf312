"""A pushing feed in the daemon (`inboxbot run`): Rocket.Chat's realtime stream wakes the
poll, so a DM is delivered within a second though the feed polls every 10 minutes; a
dropped stream reconnects and loses nothing; `status` says pushed or polling."""

from __future__ import annotations

import asyncio
import imaplib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.sim.rocketchat import RocketChatSim
from bot.sim.webhook import HookReceiver
from tests.conftest import Daemon
from tests.sim.shared import TickingClock
from tests.test_outbox_cli import eventually, inboxbot

RULES = """\
- name: dm
  when: {kind: chat}
  notify: [{sink: hooks, title: "{{ item.sender }}", message: "{{ item.text }}"}]
"""


@pytest.fixture
async def rc() -> AsyncIterator[RocketChatSim]:
    async with RocketChatSim(rate_limit=100_000, clock=TickingClock()) as simulator:
        yield simulator


def config(tmp: Path, rc: RocketChatSim, hook: HookReceiver, token: str, me: str) -> Path:
    (tmp / "rules.yaml").write_text(RULES)
    path = tmp / "inboxbot.yaml"
    path.write_text(f"""\
accounts:
  work:
    type: rocketchat
    base_url: {rc.base_url}
    user_id: {me}
    token: {token}
    every: 10m
    realtime: true
sinks:
  hooks: {{type: webhook, url: "{hook.url}"}}
rules: [rules.yaml]
backlog: skip
""")
    return path


async def test_a_pushed_dm_is_delivered_within_a_second(
    tmp_path: Path, rc: RocketChatSim, hook: HookReceiver
) -> None:
    me = rc.add_user("alice", "Alice", token="alice-token")
    bob = rc.add_user("bob", "Bob")
    dm = rc.direct(me, bob)
    daemon = Daemon(config(tmp_path, rc, hook, "alice-token", me.id), tmp_path)
    await daemon.start()
    try:
        await daemon.wait_for("READY=1")
        await eventually(lambda: _status_says(daemon.config, "pushed (realtime stream)"),
                         "the stream connected")  # fmt: skip
        latencies = []
        for n in range(5):
            posted = time.monotonic()
            rc.add_message(dm, bob, f"hello {n}")
            await eventually(lambda n=n: len(hook.received) > n, "the DM delivered", seconds=5)
            latencies.append(time.monotonic() - posted)
        assert max(latencies) < 1.0, latencies
        rc.drop_sockets()  # the stream drops while a message arrives: found after reconnect
        rc.add_message(dm, bob, "while down")
        await eventually(lambda: len(hook.received) == 6, "the DM after the drop", seconds=10)
        await eventually(lambda: _status_says(daemon.config, "1 reconnect"), "the reconnect")
        assert [b["message"] for b in hook.received][-1] == "while down"
        assert hook.duplicates() == 0
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.proc.wait(), 15)
        daemon.notify.close()


async def _status_says(config: Path, text: str) -> bool:
    _, out, _ = await inboxbot(config, "status")
    return text in out


IMAP_RULES = """\
- name: mail
  when: {kind: email}
  notify: [{sink: hooks, title: "{{ item.subject }}", message: "{{ item.sender }}"}]
"""


async def test_imap_idle_delivers_new_mail_within_two_seconds(
    tmp_path: Path, hook: HookReceiver
) -> None:
    from tests.servers.dovecot import PASSWORD, running_dovecot

    with running_dovecot() as server:
        user = server.new_user()
        (tmp_path / "rules.yaml").write_text(IMAP_RULES)
        path = tmp_path / "inboxbot.yaml"
        path.write_text(f"""\
accounts:
  home:
    type: imap
    host: 127.0.0.1
    port: {server.ports["plain"]}
    tls: none
    username: {user}
    password: {PASSWORD}
    every: 10m
sinks:
  hooks: {{type: webhook, url: "{hook.url}"}}
rules: [rules.yaml]
backlog: skip
""")
        daemon = Daemon(path, tmp_path)
        await daemon.start()
        try:
            await daemon.wait_for("READY=1")
            await eventually(lambda: _status_says(path, "pushed (IDLE on INBOX)"), "IDLE")
            for n in range(3):
                posted = time.monotonic()
                await asyncio.to_thread(_append, server.ports["plain"], user, PASSWORD, n)
                await eventually(lambda n=n: len(hook.received) > n, "the mail", seconds=5)
                assert time.monotonic() - posted < 2.0
            assert [b["title"] for b in hook.received] == ["mail 0", "mail 1", "mail 2"]
        finally:
            daemon.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.proc.wait(), 15)
            daemon.notify.close()


def _append(port: int, user: str, password: str, n: int) -> None:
    conn = imaplib.IMAP4("127.0.0.1", port)
    try:
        conn.login(user, password)
        message = f"From: a@example.org\r\nTo: {user}\r\nSubject: mail {n}\r\n\r\nbody\r\n"
        conn.append("INBOX", None, None, message.encode())
    finally:
        conn.logout()
