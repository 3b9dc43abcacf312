"""`inboxbot status | outbox | retry | drop` on the state of a running daemon, as a user
types them while it works."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.item import Item
from bot.store import NewStep, Store
from tests.conftest import Daemon, Setup


async def inboxbot(config: Path, *args: str) -> tuple[int, str, str]:
    """The command in another process, as a user runs it beside the daemon."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), *args, cwd=config.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def outbox(config: Path, *flags: str) -> list[dict[str, Any]]:
    code, out, err = await inboxbot(config, "outbox", "--json", *flags)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def eventually(probe: Callable[[], Any], what: str, seconds: float = 15) -> Any:
    """The probe's first true answer (it may be a coroutine function)."""
    deadline = time.monotonic() + seconds
    while True:
        result = probe()
        result = await result if inspect.isawaitable(result) else result
        if result:
            return result
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.2)


def subjects(setup: Setup) -> list[str]:
    return [body["title"] for body in setup.hook.received]


async def test_drop_a_blocked_delivery_and_the_queue_moves_on(setup: Setup, daemon: Daemon) -> None:
    setup.hook.fail(503, headers={"Retry-After": "3600"})  # the first delivery waits an hour
    ids = {s: setup.sim.add_message(setup.account, sender="a@example.com", subject=s, text_body="x")
           for s in ("first", "second")}  # fmt: skip
    await daemon.start()
    await daemon.wait_for("READY=1")

    async def blocked() -> dict[str, Any] | None:
        tried = [s for s in await outbox(daemon.config) if s["attempts"] == 1]
        return tried[0] if tried else None

    step = await eventually(blocked, "tried the first delivery")
    assert step["kind"] == "deliver" and step["target"] == "hooks" and step["rule"] == "new-mail"
    assert "HTTP 503" in step["last_error"] and step["status"] == "pending"
    code, status, _ = await inboxbot(daemon.config, "status")
    assert code == 0 and f"daemon: running, PID {daemon.proc.pid}" in status, status
    assert "inbox/messages: ok, last good poll" in status
    assert "hooks: 2 queued (1 due now, 1 later, next in 60m), 0 failed" in status
    assert "FAILING since" in status and "HTTP 503" in status  # the sink itself
    assert "screen: 0 queued" in status and "delayed actions: none" in status
    code, table, _ = await inboxbot(daemon.config, "outbox", "--sink", "hooks")
    assert code == 0 and step["id"][:12] in table and "in 60m" in table, table

    code, out, err = await inboxbot(daemon.config, "drop", step["id"][:6])
    assert (code, out) == (0, "1 step dropped\n"), err
    other = "second" if step["item_id"] == ids["first"] else "first"
    await eventually(lambda: other in subjects(setup), "delivered the next one")
    await eventually(lambda: setup.sim.message(ids[other]).is_read, "acted")
    assert not setup.sim.message(step["item_id"]).is_read  # the dropped one's action is cancelled
    assert await outbox(daemon.config) == []
    code, _, err = await inboxbot(daemon.config, "drop", step["id"])
    assert code == 1 and f"step {step['id']} is dropped: nothing to drop" in err


async def test_retry_a_failed_delivery_and_its_action_runs(setup: Setup, daemon: Daemon) -> None:
    setup.hook.fail(400)  # refused for good: the step fails, the rule's mark_read is cancelled
    item = setup.sim.add_message(setup.account, sender="a@example.com", subject="hi", text_body="x")
    await daemon.start()
    await daemon.wait_for("READY=1")
    failed = await eventually(lambda: outbox(daemon.config, "--failed"), "failed the delivery")
    assert [s["item_id"] for s in failed] == [item] and "HTTP 400" in failed[0]["last_error"]
    assert failed[0]["next_try"] is None
    code, status, _ = await inboxbot(daemon.config, "status")
    assert "hooks: 0 queued (0 due now, 0 later), 1 failed; last error: " in status, status
    code, table, _ = await inboxbot(daemon.config, "outbox", "--failed")
    assert "never (retry)" in table and "failed" in table

    started = time.monotonic()
    code, out, err = await inboxbot(daemon.config, "retry", failed[0]["id"])
    assert (code, out) == (0, "1 step due now (a running daemon sends them within seconds)\n"), err
    await eventually(lambda: subjects(setup) == ["hi"], "delivered the retry")
    await eventually(lambda: setup.sim.message(item).is_read, "marked it read")
    assert time.monotonic() - started < 8
    code, _, err = await inboxbot(daemon.config, "retry", failed[0]["id"][:10])
    assert code == 1 and "is done: nothing to retry" in err


async def test_retry_a_sink_waiting_for_its_backoff(setup: Setup, daemon: Daemon) -> None:
    setup.hook.fail(503, count=2, headers={"Retry-After": "3600"})
    setup.sim.add_message(setup.account, sender="a@example.com", subject="one", text_body="x")
    await daemon.start()
    await daemon.wait_for("READY=1")
    await eventually(lambda: "HTTP 503" in daemon.log.read_text(), "refused")
    code, out, _ = await inboxbot(daemon.config, "retry", "--sink", "hooks")
    assert (code, out) == (0, "1 step due now (a running daemon sends them within seconds)\n")

    async def twice() -> bool:
        return [s["attempts"] for s in await outbox(daemon.config) if s["kind"] == "deliver"] == [2]

    await eventually(twice, "tried it a second time (refused once more)", seconds=5)
    code, out, _ = await inboxbot(daemon.config, "retry", "--sink", "hooks")
    await eventually(lambda: subjects(setup) == ["one"], "delivered", seconds=5)
    code, out, _ = await inboxbot(daemon.config, "retry", "--sink", "hooks")
    assert (code, out) == (0, "nothing to retry for sink hooks\n")


async def test_status_shows_a_failing_feed_and_when_it_is_polled_again(
    setup: Setup, daemon: Daemon
) -> None:
    setup.sim.revoke_token(setup.account)  # every poll is refused with 401
    await daemon.start()
    await daemon.wait_for("READY=1")
    await daemon.wait_for("event=failing")

    async def failing() -> str | None:
        status = (await inboxbot(daemon.config, "status"))[1]
        return status if "inbox/messages: FAILING since" in status else None

    status = await eventually(failing, "recorded the failing feed")
    assert "HTTP 401" in status and "next poll in 15m; never polled successfully" in status
    daemon.proc.terminate()
    await daemon.proc.wait()
    status = (await inboxbot(daemon.config, "status"))[1]
    assert "daemon: not running: nothing is polled or sent" in status, status


async def test_step_ids_unknown_ambiguous_or_malformed(setup: Setup) -> None:
    config = setup.write()
    code, _, err = await inboxbot(config, "status")
    assert code == 1 and "state.db: no state file here" in err
    store = Store(setup.tmp / "state.db")  # two steps whose ids start alike
    item = Item("inbox", "messages", "email", "m1", datetime(2026, 1, 1, tzinfo=UTC))
    steps = [NewStep(f"abc{n}" + "0" * 28, "new-mail", "deliver", "hooks", {}, 0.0) for n in (1, 2)]
    later = NewStep("d" * 32, "new-mail", "act", "mark_read", {}, time.time() + 3600)
    store.record_poll("inbox/messages", [item], None, now=0.0, skip=False)
    store.save_plan("inbox/messages", item, [*steps, later], now=0.0)
    store.release_actions("inbox/messages", 10, now=0.0)
    store.close()
    code, status, _ = await inboxbot(config, "status")
    assert "hooks: 2 queued (2 due now, 0 later), 0 failed" in status
    assert "delayed actions: 1 waiting (mark_read ×1), next in 60m" in status
    for args, error in [
        (("retry", "abc"), "step abc is ambiguous (abc1000…, abc2000…); give more of its id"),
        (("drop", "abd"), "no step abd in the outbox (`inboxbot outbox` lists them)"),
        (("drop", "xyz"), "'xyz' is not a step id (32 hex characters, or their start)"),
        (("retry",), "retry what? give STEP ids or --sink SINK (not both)"),
        (("retry", "--sink", "hooks", "abc1"), "retry what? give STEP ids or --sink SINK"),
        (("retry", "--sink", "nosuch"), "no sink 'nosuch'; sinks: hooks, screen"),
        (("drop",), "drop what? give STEP ids"),
    ]:
        code, out, err = await inboxbot(config, *args)
        assert (code, out) == (1, ""), args
        assert error in err, (args, err)
    code, out, _ = await inboxbot(config, "drop", "ABC2")
    assert (code, out) == (0, "1 step dropped\n")
    # the rule's action went with the dropped delivery
    assert [s["id"][:4] for s in await outbox(config)] == ["abc1"]


def test_a_retried_delivery_brings_its_actions_back_once_no_other_delivery_failed(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    item = Item("inbox", "messages", "email", "m1", datetime(2026, 1, 1, tzinfo=UTC))
    steps = [NewStep(sid * 32, "r", kind, target, {}, 0.0)
             for sid, kind, target in (("a", "deliver", "hooks"), ("b", "deliver", "screen"),
                                       ("c", "act", "mark_read"))]  # fmt: skip
    store.record_poll("inbox/messages", [item], None, now=0.0, skip=False)
    store.save_plan("inbox/messages", item, steps, now=0.0)
    store.release_actions("inbox/messages", 10, now=0.0)
    for sid in ("a", "b"):  # both refused for good, as the pipeline records it
        store.finish_step(sid * 32, now=1.0, status="failed", error="HTTP 400")
        store.cancel_actions("inbox/messages", "m1", "r", now=1.0)

    def statuses() -> dict[str, str]:
        return {s.id[0]: s.status for s in store.steps(("pending", "failed", "cancelled"))}

    assert statuses() == {"a": "failed", "b": "failed", "c": "cancelled"}
    assert store.retry_steps(["a" * 32], now=2.0) == 1
    assert statuses() == {"a": "pending", "b": "failed", "c": "cancelled"}  # b still failed
    assert store.retry_steps(["b" * 32], now=2.0) == 1
    assert statuses() == {"a": "pending", "b": "pending", "c": "pending"}
    assert [s.id[0] for s in store.pending_steps("deliver")] == ["a", "b"]
    assert store.drop_steps(["b" * 32, "c" * 32], now=3.0) == 1  # c was cancelled by b's drop
    assert statuses() == {"a": "pending", "c": "cancelled"}
    assert store.retry_steps(["b" * 32], now=4.0) == 0  # dropped stays dropped
    store.close()
