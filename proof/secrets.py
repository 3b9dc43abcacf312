"""Secrets: a canary value for every credential kind (a token, a token read through
``${file:…}``, a wrong token the simulator refuses, a password, URL user info, a query
string, a header, the Sentry DSN's key) through debug logs in text and JSON, the error
messages of failing sinks and refused credentials, Sentry events (to a local capture),
``/metrics``, the state database, a SIGKILL and the CLI's status, outbox and check: the
count of canaries found must be 0."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

from proof.common import TEMPLATE, CountingMailTd, CountingReceiver, Inboxbot, Result, add_mail

CANARIES = {
    "token": "td_CANARYTOKEN0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "${file:} token": "td_CANARYFILE0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "wrong token": "td_CANARYWRONG0a1b2c3d4e5f60718293a4b5c6d7e8",
    "password": "CANARYPASSWORD-4471",
    "URL user info": "CANARYUSERINFO-9912",
    "query string": "CANARYQUERY-3318",
    "header": "CANARYHEADER-5527",
    "Sentry key": "canarysentrykey8812",
}
RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}, {sink: phone, template: email}]
  then: [mark_read]
"""


class SentryCapture:
    """A local Sentry: keeps every envelope it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.runner: web.AppRunner | None = None

    async def _envelope(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({})

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/api/1/envelope/", self._envelope)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def _config(tmp: Path, sim: CountingMailTd, hook: CountingReceiver, addresses: list[str]) -> Path:
    (tmp / "box1.token").write_text(CANARIES["${file:} token"] + "\n")
    (tmp / "templates").mkdir(exist_ok=True)
    (tmp / "templates" / "email.j2").write_text(TEMPLATE)
    (tmp / "rules.yaml").write_text(RULES)
    port = hook.url.split(":")[2].split("/")[0]
    hook_url = (f"http://user:{CANARIES['URL user info']}@127.0.0.1:{port}/hook"
                f"?key={CANARIES['query string']}")  # fmt: skip
    box = "type: mailtd, base_url: {url}, account_id: {a}, token: {t}, every: 1s, timeout: 2s"
    config = tmp / "inboxbot.yaml"
    config.write_text(f"""\
accounts:
  box0: {{{box.format(url=sim.base_url, a=addresses[0], t=CANARIES["token"])}}}
  box1: {{{box.format(url=sim.base_url, a=addresses[1], t='"${file:box1.token}"')}}}
  wrong: {{{box.format(url=sim.base_url, a=addresses[0], t=CANARIES["wrong token"])}}}
sinks:
  hooks: {{type: webhook, url: "{hook_url}", headers: {{X-Api-Key: {CANARIES["header"]}}}}}
  phone: {{type: ntfy, url: "http://127.0.0.1:{port}/ntfy/topic", username: alice,
           password: {CANARIES["password"]}}}
rules: [rules.yaml]
templates: [templates]
backlog: notify
""")
    return config


async def _cli(config: Path, *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "INBOXBOT_LOG_LEVEL": "debug", "INBOXBOT_LISTEN": ""},
        cwd=config.parent,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out


async def run(tmp: Path, *, seed: int) -> Result:
    sim, hook, sentry = CountingMailTd(rate_limit=20), CountingReceiver(), SentryCapture()
    await sim.start()
    await hook.start()
    sentry_port = await sentry.start()
    try:
        accounts = [sim.add_account(f"sec{n}@mail.td") for n in range(2)]
        accounts[0].token = CANARIES["token"]
        sim._tokens = {a.token: a for a in accounts}  # the canary is the account's token
        sim.accounts[accounts[1].id].token = CANARIES["${file:} token"]
        sim._tokens = {a.token: a for a in accounts}
        config = _config(tmp, sim, hook, [a.address for a in accounts])
        dsn = f"http://{CANARIES['Sentry key']}@127.0.0.1:{sentry_port}/1"
        seen: dict[str, bytes] = {}
        for fmt in ("text", "json"):
            env = {"INBOXBOT_LOG_LEVEL": "debug", "INBOXBOT_LOG_FORMAT": fmt,
                   "INBOXBOT_SENTRY_DSN": dsn}  # fmt: skip
            bot = Inboxbot(config, tmp / f"{fmt}.log", env=env)
            hook.unavailable = True  # failing deliveries: their error messages
            for n in range(4):
                for a in accounts:
                    add_mail(sim, a, f"secret run {fmt} {n}")
            await bot.start()
            await asyncio.sleep(5)
            hook.unavailable = False
            await asyncio.sleep(5)
            seen[f"/metrics ({fmt})"] = (await bot.get("/metrics"))[1].encode()
            await (bot.kill() if fmt == "text" else bot.stop())  # a crash, then a stop
            seen[f"{fmt} log"] = bot.log.read_bytes()
        for command in ("status", "outbox", "check", "once"):
            seen[f"inboxbot {command}"] = await _cli(config, command)
        seen.update(_state_files(tmp))
        # each envelope's first line is its header, which names the DSN to Sentry itself
        seen["Sentry events"] = b"\n".join(b.partition(b"\n")[2] for b in sentry.bodies)
        return _verdict(seen, sim, hook, len(sentry.bodies))
    finally:
        await sentry.stop()
        await hook.stop()
        await sim.stop()


def _state_files(tmp: Path) -> dict[str, bytes]:
    """The state database with its journal files, as bytes."""
    return {f.name: f.read_bytes() for f in tmp.glob("state.db*")}


def _verdict(seen: dict[str, bytes], sim: CountingMailTd, hook: CountingReceiver,
             events: int) -> Result:  # fmt: skip
    found = [f"{kind} in {place}" for kind, value in CANARIES.items()
             for place, data in seen.items() if value.encode() in data]  # fmt: skip
    refused = sum(
        1 for r in sim.requests if r.caller == CANARIES["wrong token"] and r.status == 401
    )
    counts = {
        "canaries": len(CANARIES), "places searched": len(seen),
        "bytes searched": sum(len(d) for d in seen.values()), "found": len(found),
        "wrong-token requests refused": refused, "webhook deliveries": len(hook.received),
        "Sentry envelopes": events,
    }  # fmt: skip
    exercised = refused > 0 and len(hook.received) > 0 and events > 0
    tried = ("canaries for " + ", ".join(CANARIES) + "; debug logs (text, then JSON), a "
             "failing webhook and a refusing ntfy target, SIGKILL, /metrics, state database, "
             "status/outbox/check/once output, Sentry events to a local capture (the DSN's "
             "public key only in each envelope's header, addressed to Sentry)")  # fmt: skip
    notes = found[:6] + ([] if exercised else ["a canary path was not exercised"])
    return Result("secrets", tried, counts, not found and exercised, notes)
