"""Shared benchmark setup: the Mail.td simulator and a webhook receiver, each in a child
process (so their CPU is not the measured process's), and a configuration written for them.

Run as ``python bench/common.py hook`` it is that webhook receiver: a ``HookReceiver`` plus
a small control app (``GET /count``, ``POST /reset``) on a second loopback port.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
LOOPBACK = "127.0.0.1"

TEMPLATE = """\
{% block title %}{{ item.sender }}: {{ item.subject | truncate(80) }}{% endblock %}
{% block message %}{{ item.text | truncate(240) }}{% endblock %}
"""


@dataclass
class Sim:
    base_url: str
    accounts: list[tuple[str, str]]  # (address, token)


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def mailtd_sim(accounts: int, messages: int, rate_limit: float = 100_000) -> Iterator[Sim]:
    """``python -m bot.sim.mailtd`` on a free loopback port, ``messages`` mails per account."""
    proc = _spawn([PY, "-m", "bot.sim.mailtd", "--host", LOOPBACK, "--port", "0",
                   "--accounts", str(accounts), "--messages", str(messages),
                   "--rate-limit", str(rate_limit), "--seed", "1"])  # fmt: skip
    try:
        assert proc.stdout is not None
        head = proc.stdout.readline()
        if not head.startswith("Mail.td simulator at "):
            raise RuntimeError(f"simulator did not start: {head!r}")
        found = []
        for _ in range(accounts):
            address, _id, token = proc.stdout.readline().split()
            found.append((address, token.removeprefix("token=")))
        yield Sim(head.split()[-1], found)
    finally:
        _stop(proc)


@dataclass
class Hook:
    url: str
    control: str

    def count(self) -> tuple[int, int]:
        """(notifications received, duplicate idempotency keys)."""
        with urllib.request.urlopen(f"{self.control}/count") as resp:
            data = json.load(resp)
        return data["received"], data["duplicates"]

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.control}/reset", method="POST"))


@contextmanager
def hook_receiver() -> Iterator[Hook]:
    proc = _spawn([PY, __file__, "hook"])
    try:
        assert proc.stdout is not None
        url, control = proc.stdout.readline().split()
        yield Hook(url, control)
    finally:
        _stop(proc)


def write_config(
    folder: Path, sim: Sim, *, rules: str, sinks: str, every: str = "1m", rate: int = 50,
    extra: str = "",
) -> Path:  # fmt: skip
    """``folder/inboxbot.yaml`` with one account ``aNNN`` per simulator account."""
    (folder / "templates").mkdir(exist_ok=True)
    (folder / "templates" / "email.j2").write_text(TEMPLATE)
    (folder / "rules.yaml").write_text(rules)
    accounts = "".join(
        f"  a{n:03d}:\n    type: mailtd\n    base_url: {sim.base_url}\n"
        f"    account_id: {address}\n    token: {token}\n"
        f"    every: {every}\n    rate: {rate}\n    timeout: 30s\n"
        for n, (address, token) in enumerate(sim.accounts)
    )
    config = folder / "inboxbot.yaml"
    config.write_text(
        f"accounts:\n{accounts}sinks:\n{sinks}rules: [rules.yaml]\ntemplates: [templates]\n{extra}"
    )
    return config


async def _serve_hook() -> None:
    from aiohttp import web

    from bot.sim.webhook import HookReceiver

    receiver = HookReceiver()
    url = await receiver.start(LOOPBACK)

    async def count(_: web.Request) -> web.Response:
        return web.json_response(
            {"received": len(receiver.received), "duplicates": receiver.duplicates()}
        )

    async def reset(_: web.Request) -> web.Response:
        receiver.received.clear()
        receiver.keys.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    print(url, f"http://{LOOPBACK}:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


if __name__ == "__main__" and sys.argv[1:] == ["hook"]:
    asyncio.run(_serve_hook())
