"""Shared benchmark setup: the Mail.td simulator and a webhook receiver, each in a child
process (so their CPU is not the measured process's), and a configuration written for them.

``python bench/common.py sim …`` is the Mail.td simulator (``bot.sim.mailtd``) with an index
of messages per account (so 10,000 mailboxes list as fast as one) and a small control API:
``GET /_sim/bench/counts`` (list and detail requests since the last ``POST /_sim/bench/reset``) and
``POST /_sim/bench/add`` (new mails for every account). ``python bench/common.py hook`` is a
``HookReceiver`` plus ``GET /count``, ``GET /order`` and ``POST /reset`` on a second port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PY = sys.executable
LOOPBACK = "127.0.0.1"

TEMPLATE = """\
{% block title %}{{ item.sender }}: {{ item.subject | truncate(80) }}{% endblock %}
{% block message %}{{ item.text | truncate(240) }}{% endblock %}
"""


def cpu_seconds() -> float:
    """CPU (user + system) of this process, threads included (SQLite, DNS, ...)."""
    t = os.times()
    return t.user + t.system


def rss_mib(pid: int | None = None) -> float:
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _get(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.load(resp)


@dataclass
class Sim:
    base_url: str
    accounts: list[tuple[str, str]]  # (address, token)

    def counts(self) -> dict[str, int]:
        """Requests since the last reset: ``list``, ``detail``, ``other``, ``refused``, and
        ``busiest_second``: the most list requests within one wall second."""
        counts: dict[str, int] = _get(f"{self.base_url}/_sim/bench/counts")
        return counts

    def reset(self) -> None:
        _get(f"{self.base_url}/_sim/bench/reset", "POST", {})

    def add(self, per_account: int) -> None:
        """``per_account`` new mails in every account, dated now."""
        _get(f"{self.base_url}/_sim/bench/add", "POST", {"count": per_account})


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


@contextmanager
def mailtd_sim(accounts: int, messages: int, rate_limit: float = 100_000) -> Iterator[Sim]:
    """The simulator on a free loopback port, ``messages`` mails per account."""
    proc = _spawn([PY, __file__, "sim", "--accounts", str(accounts), "--messages",
                   str(messages), "--rate-limit", str(rate_limit)])  # fmt: skip
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
        stop(proc)


@dataclass
class Hook:
    url: str
    control: str

    def count(self) -> tuple[int, int]:
        """(notifications received, duplicate idempotency keys)."""
        data = _get(f"{self.control}/count")
        return data["received"], data["duplicates"]

    def order(self) -> list[tuple[str, str]]:
        """(account, item id) of every notification, in arrival order."""
        return [tuple(pair) for pair in _get(f"{self.control}/order")]  # type: ignore[misc]

    def reset(self) -> None:
        _get(f"{self.control}/reset", "POST", {})


@contextmanager
def hook_receiver() -> Iterator[Hook]:
    proc = _spawn([PY, __file__, "hook"])
    try:
        assert proc.stdout is not None
        url, control = proc.stdout.readline().split()
        yield Hook(url, control)
    finally:
        stop(proc)


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


def row(bench: str, figure: str, bare: float, ours: float, fmt: str = "{:.3f}") -> None:
    """One line of the table: figure, bare aiohttp, inboxbot, their ratio."""
    shown = f"{ours / bare:.2f}x" if bare else "n/a"
    print(f"{bench}: {figure:<44} bare {fmt.format(bare):>10}  inboxbot {fmt.format(ours):>10}"
          f"  ratio {shown}", flush=True)  # fmt: skip


def status_kb(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM``-style line of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(notify: socket.socket) -> float:
    """The monotonic time at which READY=1 arrived."""
    notify.settimeout(60)
    while b"READY=1" not in notify.recv(4096):
        pass
    return time.monotonic()


# --- the child processes ----------------------------------------------------------------


async def _serve_sim(args: argparse.Namespace) -> None:
    from aiohttp import web

    from bot.sim.base import serve_until_stopped
    from bot.sim.corpus import realistic_message
    from bot.sim.mailtd import MailTdSim, SimAccount, SimMessage, seed_realistic

    class IndexedSim(MailTdSim):
        """Lists from a per-account index; counts requests without keeping a log."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.by_account: dict[str, list[SimMessage]] = {}
            self.bench = dict.fromkeys(("list", "detail", "other", "refused"), 0)
            self.by_second: Counter[int] = Counter()  # list requests per wall second

        def add_message(self, account: SimAccount | str, **kwargs: Any) -> str:
            mid = super().add_message(account, **kwargs)
            msg = self.messages[mid]
            box = self.by_account.setdefault(msg.account_id, [])
            box.append(msg)
            box.sort(key=lambda m: (m.created_at, m.id), reverse=True)
            return mid

        def _visible(self, account: SimAccount) -> list[SimMessage]:
            return [m for m in self.by_account.get(account.id, ()) if not m.deleted]

        def make_app(self) -> web.Application:
            app = super().make_app()
            app.router.add_get("/_sim/bench/counts", self._counts)
            app.router.add_post("/_sim/bench/reset", self._reset_counts)
            app.router.add_post("/_sim/bench/add", self._add)
            return app

        async def serve(self, request: web.Request, handler: Any) -> web.StreamResponse:
            response = await super().serve(request, handler)
            parts = request.path.rstrip("/").split("/")  # '', api, accounts, id, messages, …
            if response.status >= 400:
                kind = "refused"
            elif request.method == "GET" and parts[-1] == "messages":
                kind = "list"
            elif request.method == "GET" and len(parts) == 6:
                kind = "detail"
            else:
                kind = "other"
            self.bench[kind] += 1
            if kind == "list":
                self.by_second[int(time.monotonic())] += 1
            self.requests.clear()  # the base class logs every request; nobody reads it here
            return response

        async def _counts(self, _: web.Request) -> web.Response:
            seconds = sorted(self.by_second)[1:-1]  # whole seconds only
            busiest = max((self.by_second[s] for s in seconds), default=0)
            return web.json_response({**self.bench, "busiest_second": busiest})

        async def _reset_counts(self, _: web.Request) -> web.Response:
            self.bench = dict.fromkeys(self.bench, 0)
            self.by_second.clear()
            return web.json_response({})

        async def _add(self, request: web.Request) -> web.Response:
            count = int((await request.json())["count"])
            for account in list(self.accounts.values()):
                for _ in range(count):
                    self.add_message(account, **realistic_message(rng))
            return web.json_response({"added": count * len(self.accounts)})

    sim = IndexedSim(rate_limit=args.rate_limit)
    rng = random.Random(1)
    for n in range(args.accounts):
        seed_realistic(sim, sim.add_account(f"box{n + 1}@mail.td"), args.messages, rng)

    def banner() -> list[str]:
        accounts = [f"  {a.address} id={a.id} token={a.token}" for a in sim.accounts.values()]
        return [f"Mail.td simulator at {sim.base_url}", *accounts]

    await serve_until_stopped(sim, LOOPBACK, 0, banner)


async def _bare_loop(base: str, every: float, accounts: list[tuple[str, str]]) -> None:
    """The bare aiohttp loop of the daemon figures: one session, each inbox's list page 1
    every ``every`` seconds (the inboxes spread over one interval), a dict of seen ids."""
    import aiohttp

    async def inbox(session: aiohttp.ClientSession, n: int, address: str, token: str) -> None:
        url = f"{base}/api/accounts/{address}/messages?page=1"
        seen: dict[str, None] = {}
        tick = time.monotonic() + every * n / len(accounts)
        while True:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                for message in (await resp.json())["messages"]:
                    seen.setdefault(message["id"], None)
            tick += every

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(inbox(session, n, a, t) for n, (a, t) in enumerate(accounts)))


def bare_loop(sim: Sim, every: float) -> subprocess.Popen[str]:
    """The bare loop over ``sim``'s accounts in a process of its own (stop it with _stop)."""
    proc = subprocess.Popen([PY, __file__, "bare", "--url", sim.base_url, "--every", str(every)],
                            stdin=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(sim.accounts))
    proc.stdin.close()
    return proc


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _serve_hook() -> None:
    from aiohttp import web

    from bot.sim.webhook import HookReceiver

    receiver = HookReceiver()
    url = await receiver.start(LOOPBACK)

    async def count(_: web.Request) -> web.Response:
        return web.json_response(
            {"received": len(receiver.received), "duplicates": receiver.duplicates()}
        )

    async def order(_: web.Request) -> web.Response:
        pairs = [(b.get("account"), b.get("item_id")) for b in receiver.received]
        return web.json_response(pairs)

    async def reset(_: web.Request) -> web.Response:
        receiver.received.clear()
        receiver.keys.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_get("/order", order)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    print(url, f"http://{LOOPBACK}:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


def _main() -> None:
    parser = argparse.ArgumentParser(description="benchmark helpers")
    parser.add_argument("what", choices=("sim", "hook", "bare"))
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--rate-limit", type=float, default=100_000)
    parser.add_argument("--url", help="bare: the simulator")
    parser.add_argument("--every", type=float, default=1.0, help="bare: seconds")
    args = parser.parse_args()
    if args.what == "bare":
        accounts = [(a, t) for a, t in json.loads(sys.stdin.read())]
        asyncio.run(_bare_loop(args.url, args.every, accounts))
        return
    asyncio.run(_serve_sim(args) if args.what == "sim" else _serve_hook())


if __name__ == "__main__":
    _main()
