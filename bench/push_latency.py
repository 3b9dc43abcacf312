"""Push latency through `inboxbot run`: the time from a message arriving upstream to the
webhook receiving its notification, p50/p99 over N messages (default 200), one at a time.
The daemon runs as a user runs it (a child process, a configuration file); the upstream
and the receiver run in this process on 127.0.0.1, so their clocks are one.

    .venv/bin/python bench/push_latency.py rocketchat [--messages 200]
    .venv/bin/python bench/push_latency.py imap [--messages 200]      # needs Dovecot

The feed polls every 10 minutes: whatever arrives sooner was pushed.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bot.sim.rocketchat import RocketChatSim
from bot.sim.webhook import HookReceiver

ROOT = Path(__file__).resolve().parent.parent
RULES = '- name: any\n  notify: [{sink: hooks, title: "x", message: "{{ item.subject }}"}]\n'
Upstream = tuple[str, Callable[[int], Awaitable[None]]]  # (account YAML, send message n)


@asynccontextmanager
async def rocketchat() -> AsyncIterator[Upstream]:
    async with RocketChatSim(rate_limit=100_000) as rc:
        me, bob = rc.add_user("alice", "Alice", token="t"), rc.add_user("bob", "Bob")
        dm = rc.direct(me, bob)

        async def send(n: int) -> None:
            rc.add_message(dm, bob, f"message {n}")

        account = (f"type: rocketchat, base_url: {rc.base_url}, user_id: {me.id}, token: t, "
                   "every: 10m, realtime: true, rate: 100000/min")  # fmt: skip
        yield account, send


@asynccontextmanager
async def imap() -> AsyncIterator[Upstream]:
    sys.path.insert(0, str(ROOT))
    from tests.servers.dovecot import PASSWORD, running_dovecot  # the tests' real Dovecot

    with running_dovecot() as server:
        user, port = server.new_user(), server.ports["plain"]
        conn = imaplib.IMAP4("127.0.0.1", port)  # the deliverer's own connection
        conn.login(user, PASSWORD)

        async def send(n: int) -> None:
            message = f"From: a@example.org\r\nSubject: message {n}\r\n\r\nbody\r\n"
            await asyncio.to_thread(conn.append, "INBOX", None, None, message.encode())

        account = (f"type: imap, host: 127.0.0.1, port: {port}, tls: none, username: {user}, "
                   f"password: {PASSWORD}, every: 10m")  # fmt: skip
        try:
            yield account, send
        finally:
            conn.logout()


async def measure(upstream: Callable[[], Awaitable[object]], name: str, count: int) -> None:
    hook = HookReceiver()
    await hook.start()
    async with upstream() as (account, send):  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "rules.yaml").write_text(RULES)
            (folder / "inboxbot.yaml").write_text(
                f"accounts:\n  src: {{{account}}}\nsinks:\n  hooks: {{type: webhook, "
                f'url: "{hook.url}", rate: 100000/s}}\nrules: [rules.yaml]\nbacklog: skip\n'
            )
            env = {**os.environ, "INBOXBOT_LISTEN": "", "INBOXBOT_LOG_LEVEL": "warning"}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(folder / "inboxbot.yaml"), "run",
                env=env, cwd=folder,
            )  # fmt: skip
            try:
                await asyncio.sleep(3)  # connected and the first poll done
                latencies = []
                for n in range(count):
                    started = time.perf_counter()
                    await send(n)
                    while len(hook.received) <= n:  # noqa: ASYNC110 - the receiver's list
                        await asyncio.sleep(0.0005)
                    latencies.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.01)
            finally:
                proc.terminate()
                await proc.wait()
    await hook.stop()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    figures = f"p50 {q[49]:.1f}  p99 {q[98]:.1f}  max {max(latencies):.1f}  (goal p99 ≤ 50)"
    print(f"push_latency: {name} {count} messages, arrival → webhook ms  {figures}")


async def bare_imap(count: int) -> None:
    """The same deliveries seen by a bare aioimaplib client in IDLE (APPEND → EXISTS): the
    server's own delay, which no client can beat (Dovecot waits 500 ms before it tells a
    change: NOTIFY_DELAY_MSECS in its mailbox-watch.c)."""
    import aioimaplib

    sys.path.insert(0, str(ROOT))
    from tests.servers.dovecot import PASSWORD, running_dovecot

    with running_dovecot() as server:
        user, port = server.new_user(), server.ports["plain"]
        client = aioimaplib.IMAP4("127.0.0.1", port)
        await client.wait_hello_from_server()
        await client.login(user, PASSWORD)
        await client.select("INBOX")
        deliver = imaplib.IMAP4("127.0.0.1", port)
        deliver.login(user, PASSWORD)
        latencies = []
        for n in range(count):
            idle = await client.idle_start(timeout=60)
            started = time.perf_counter()
            message = f"Subject: message {n}\r\n\r\nbody\r\n".encode()
            await asyncio.to_thread(deliver.append, "INBOX", None, None, message)
            while not any(b"EXISTS" in bytes(line) for line in await client.wait_server_push()):
                pass
            latencies.append((time.perf_counter() - started) * 1000)
            client.idle_done()
            await asyncio.wait_for(idle, 5)
        deliver.logout()
        await client.logout()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"push_latency: imap bare IDLE client {count} messages, APPEND → EXISTS ms  "
          f"p50 {q[49]:.1f}  p99 {q[98]:.1f}  max {max(latencies):.1f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", choices=["rocketchat", "imap"])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    chosen = rocketchat if args.upstream == "rocketchat" else imap
    asyncio.run(measure(chosen, args.upstream, args.messages))
    if args.upstream == "imap":
        asyncio.run(bare_imap(min(args.messages, 50)))
