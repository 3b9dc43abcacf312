"""Running for months: sd_notify, the HTTP endpoints, SIGHUP reload, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

from bot.store import Store
from tests.conftest import Daemon, Setup


async def test_sd_notify_ready_watchdog_and_stopping(daemon: Daemon) -> None:
    await daemon.start()
    await daemon.wait_for("READY=1")
    assert any(m.startswith("STATUS=1 feeds, 1 rules") for m in daemon.received())
    before = daemon.received().count("WATCHDOG=1")
    await asyncio.sleep(1.0)
    assert daemon.received().count("WATCHDOG=1") >= before + 2  # every 0.2 s while healthy
    daemon.proc.send_signal(signal.SIGSTOP)  # a hung process: no more pings
    await asyncio.sleep(0.3)
    stalled = daemon.received().count("WATCHDOG=1")
    await asyncio.sleep(1.0)
    assert daemon.received().count("WATCHDOG=1") == stalled
    daemon.proc.send_signal(signal.SIGCONT)
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0
    assert "STOPPING=1" in daemon.received()


async def test_health_readiness_and_metrics(setup: Setup, daemon: Daemon) -> None:
    setup.sim.add_message(setup.account, sender="a@example.com", subject="hi", text_body="x")
    await daemon.start()
    await daemon.wait_for("event=delivered")
    assert await daemon.get("/healthz") == (200, "ok\n")
    assert await daemon.get("/readyz") == (200, "ok\n")
    status, metrics = await daemon.get("/metrics")
    assert status == 200
    for line in [
        'inboxbot_polls_total{account="inbox",feed="messages"}',
        'inboxbot_new_items_total{account="inbox",feed="messages"} 1.0',
        'inboxbot_rule_matches_total{rule="new-mail"} 1.0',
        'inboxbot_notifications_total{outcome="delivered",sink="hooks"} 1.0',
        'inboxbot_actions_total{action="mark_read",outcome="done"} 1.0',
        "inboxbot_outbox_depth 0.0",
        "inboxbot_config_last_reload_successful 1.0",
        "inboxbot_config_last_reload_success_timestamp_seconds 1.7",
        'version="0.1.0"} 1.0',
        'inboxbot_poll_duration_seconds_bucket{account="inbox",feed="messages",le="0.5"}',
        'inboxbot_last_successful_poll_timestamp_seconds{account="inbox",feed="messages"}',
    ]:
        assert line in metrics, line
    setup.sim.set_down(True)  # the feed fails for longer than three intervals (1 s each)
    await asyncio.sleep(4.5)
    status, body = await daemon.get("/readyz")
    assert status == 503 and "feed inbox/messages: last successful poll" in body
    assert (
        'inboxbot_poll_errors_total{account="inbox",feed="messages",reason="TransientError"}'
        in (await daemon.get("/metrics"))[1]
    )
    setup.sim.set_down(False)
    deadline = time.monotonic() + 20
    while (await daemon.get("/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "never ready again"
        await asyncio.sleep(0.3)
    log = daemon.log.read_text()
    assert log.count("event=failing") == 1 and log.count("event=recovered") == 1


async def test_sighup_keeps_a_bad_configuration_out_and_takes_a_good_one(
    setup: Setup, daemon: Daemon
) -> None:
    await daemon.start()
    await daemon.wait_for("READY=1")
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("every: 1s", "every: soon"))
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.wait_for('event="reload refused, configuration kept"')
    refusal = f"{daemon.config}:7: accounts.inbox.every: 'soon' is not a duration"
    assert refusal in daemon.log.read_text()
    status, body = await daemon.get("/readyz")
    assert status == 503
    assert f"configuration reload refused, the previous one runs: {refusal}" in body
    assert "inboxbot_config_last_reload_successful 0.0" in (await daemon.get("/metrics"))[1]
    second = setup.sim.add_account("bob@mail.td")
    setup.sim.add_message(second, sender="a@example.com", subject="for bob", text_body="x")
    daemon.config.write_text(good.replace("sinks:", f"""\
  bob:
    type: mailtd
    base_url: {setup.sim.base_url}
    account_id: bob@mail.td
    token: {second.token}
    every: 1s
sinks:"""))  # fmt: skip
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.wait_for("event=reloaded")
    assert any(m.startswith("STATUS=2 feeds") for m in daemon.received())
    assert "reload refused" not in (await daemon.get("/readyz"))[1]
    assert "inboxbot_config_last_reload_successful 1.0" in (await daemon.get("/metrics"))[1]
    deadline = time.monotonic() + 15
    while not any(b["account"] == "bob" for b in setup.hook.received):
        assert time.monotonic() < deadline, "the added feed was never polled"
        await asyncio.sleep(0.2)
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0


async def test_healthcheck_command(daemon: Daemon) -> None:
    async def healthcheck() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "healthcheck", env={**os.environ, "INBOXBOT_LISTEN": f"127.0.0.1:{daemon.port}"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await proc.wait()

    assert await healthcheck() == 1
    await daemon.start()
    await daemon.wait_for("READY=1")
    assert await healthcheck() == 0


async def test_a_refused_sink_fixed_and_reloaded_delivers_within_seconds(
    setup: Setup, daemon: Daemon
) -> None:
    setup.hook.token = "right"  # the receiver refuses every other token with 401
    plain = f'hooks: {{type: webhook, url: "{setup.hook.url}"}}'
    good = daemon.config.read_text()
    with_token = good.replace(plain, plain[:-1] + ', headers: {Authorization: "Bearer %s"}}')
    daemon.config.write_text(with_token % "wrong")
    setup.sim.add_message(setup.account, sender="a@example.com", subject="code 1234", text_body="x")
    await daemon.start()
    await daemon.wait_for("READY=1")
    await until(lambda: setup.hook.refused >= 1, "refused the token")
    status, body = await daemon.get("/readyz")
    assert status == 503 and "sink hooks: credentials refused: hooks: POST" in body, body
    assert "HTTP 401" in body and "wrong" not in body
    await until(lambda: setup.hook.refused >= 2, "tried again")
    store = Store(setup.tmp / "state.db")
    (waiting,) = [s for s in store.steps(("pending",)) if s.kind == "deliver"]
    store.close()
    assert waiting.due_at > time.time() + 3  # its backoff: 5 to 10 s after the second refusal
    daemon.config.write_text(with_token % "right")
    daemon.proc.send_signal(signal.SIGHUP)
    started = time.time()
    await until(lambda: setup.hook.received, "delivered after the reload", seconds=5)
    assert time.time() < waiting.due_at and time.time() - started < 4
    assert 'event="backoff reset" sink=hooks' in daemon.log.read_text()
    await until_ready(daemon)


async def test_a_reload_polls_a_changed_account_at_once_and_lets_the_others_rest(
    setup: Setup, daemon: Daemon
) -> None:
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace(setup.account.token, "td_wrong"))
    setup.sim.add_message(setup.account, sender="a@example.com", subject="hi", text_body="x")
    await daemon.start()
    await daemon.wait_for("event=failing")  # refused credentials: the feed rests 15 min
    polls = len(setup.sim.requests)
    daemon.proc.send_signal(signal.SIGHUP)  # nothing changed: it keeps resting
    await daemon.wait_for("event=reloaded")
    await asyncio.sleep(2.5)
    assert len(setup.sim.requests) == polls
    daemon.config.write_text(good)
    daemon.proc.send_signal(signal.SIGHUP)
    started = time.monotonic()
    await until(lambda: setup.hook.received, "polled and delivered after the reload", seconds=5)
    assert time.monotonic() - started < 4
    assert 'event="backoff reset" feed=inbox/messages' in daemon.log.read_text()


async def until(probe: Callable[[], object], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.05)


async def until_ready(daemon: Daemon) -> None:
    deadline = time.monotonic() + 20
    while (answer := await daemon.get("/readyz"))[0] != 200:
        assert time.monotonic() < deadline, f"never ready again: {answer}"
        await asyncio.sleep(0.3)
