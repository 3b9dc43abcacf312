"""Noise control as a user meets it: `inboxbot mute | mutes | unmute`, what `status` and
`outbox` say of held, grouped and muted notifications, and a daemon killed while a group
is open or quiet hours run, restarted: every item delivered exactly once."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import load, running
from bot.sources import Feed
from tests.conftest import Daemon, Setup
from tests.test_outbox_cli import eventually, inboxbot, outbox

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)
INLINE = 'title: "{{ item.subject }}", message: "from {{ item.sender }}"'


def rules(noise: str = "", rule: str = "") -> str:
    return f"""\
- name: news
  when: {{kind: email}}
{rule}  notify: [{{sink: hooks, {INLINE}{noise}}}]
"""


def around_now() -> str:
    """Quiet hours that hold now (UTC), whatever the time of the run."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    return f'quiet: {{from: "{start:%H:%M}", to: "{end:%H:%M}", tz: UTC}}'


def with_sink(setup: Setup, config: Path, noise: str) -> Path:
    line = f'  hooks: {{type: webhook, url: "{setup.hook.url}"}}\n'
    config.write_text(config.read_text().replace(line, line[:-2] + f", {noise}}}\n"))
    return config


def mail(setup: Setup, subject: str) -> str:
    return setup.sim.add_message(setup.account, sender="a@example.com", subject=subject,
                                 text_body="x")  # fmt: skip


async def once(config: Path) -> None:
    async with running(load(config), config.parent / "state.db") as pipe:
        await pipe.poll(FEED)
        await pipe.flush()


async def test_status_and_outbox_say_why_each_notification_waits(setup: Setup) -> None:
    config = with_sink(setup, setup.write(rules(", group: {wait: 1h}")), around_now())
    mail(setup, "grouped one")
    mail(setup, "grouped two")
    await once(config)
    code, out, err = await inboxbot(config, "status")
    assert code == 0, err
    assert "grouped: 2 items, sends at " in out, out
    config = with_sink(setup, setup.write(rules()), around_now())
    mail(setup, "in quiet hours")
    await once(config)
    steps = await outbox(config)
    held = [s["held"] for s in steps]
    assert held.count("grouped") == 2 and any(h and h.startswith("quiet hours until") for h in held)
    code, out, _ = await inboxbot(config, "outbox")
    assert "held: quiet hours until " in out and " UTC" in out, out
    assert "grouped: 2 items" in out
    code, out, _ = await inboxbot(config, "status")
    assert "1 held: quiet hours until" in out, out
    # retry sends the held one past the quiet hours, now
    held_id = next(s["id"] for s in steps if s["held"] and s["held"].startswith("quiet"))
    code, out, err = await inboxbot(config, "retry", held_id[:8])
    assert code == 0, err
    await once(config)
    assert [b["title"] for b in setup.hook.received] == ["in quiet hours"]


async def test_mute_mutes_unmute_from_the_command_line(setup: Setup) -> None:
    config = setup.write(rules())
    code, out, err = await inboxbot(config, "mute", "--rule", "news", "--for", "2h",
                                    "--comment", "on holiday")  # fmt: skip
    assert code == 0 and out.startswith("mute 1: rule news until "), err
    assert "recorded as muted, not sent" in out and '"on holiday"' in out
    mail(setup, "while muted")
    await once(config)
    assert setup.hook.received == []
    code, out, _ = await inboxbot(config, "outbox")
    assert "muted by 1 (until " in out and '"on holiday"' in out, out
    code, out, _ = await inboxbot(config, "status")
    assert "mutes: 1 (rule news, until " in out and "1 silenced so far" in out, out
    code, out, _ = await inboxbot(config, "mutes")
    assert out.startswith("1: rule news until ")
    code, out, _ = await inboxbot(config, "unmute", "1")
    assert (code, out.strip()) == (0, "mute 1 ended")
    code, out, _ = await inboxbot(config, "mutes")
    assert out.strip() == "no mute in force"
    mail(setup, "after")
    await once(config)
    assert [b["title"] for b in setup.hook.received] == ["after"]


async def test_mute_mistakes_are_refused_with_the_reason(setup: Setup) -> None:
    config = setup.write(rules())
    cases = {
        ("--rule", "news"): "for how long? give --for 2h, --until 2026-12-24T08:00, or --forever",
        ("--rule", "nwes", "--for", "1h"): "--rule 'nwes': not configured; one of: news",
        ("--sink", "phone", "--for", "1h"): "--sink 'phone': not configured; one of: hooks, screen",
        ("--match", "subjct=x", "--for", "1h"): "--match 'subjct=x': write FIELD=VALUE with FIELD",
        ("--for", "2 hours"): "--for: '2 hours' is not a duration",
        ("--until", "2020-01-01T00:00"): "--until 2020-01-01T00:00: that is in the past",
        ("--forever", "--defer"): "--defer needs an end",
    }
    for flags, says in cases.items():
        code, _, err = await inboxbot(config, "mute", *flags)
        assert code == 1 and says in err, (flags, err)
    code, _, err = await inboxbot(config, "unmute", "7")
    assert code == 1 and "no mute 7" in err


async def test_a_deferring_mute_from_the_shell_then_unmute_sends_one_digest(setup: Setup) -> None:
    config = setup.write(rules())
    code, _, err = await inboxbot(config, "mute", "--for", "1h", "--defer")
    assert code == 0, err
    mail(setup, "one")
    mail(setup, "two")
    await once(config)
    code, out, _ = await inboxbot(config, "outbox")
    assert "then sent as one digest" in out, out
    code, out, _ = await inboxbot(config, "unmute", "1")
    assert "its 2 held notification(s) are due now" in out
    await once(config)
    (digest,) = setup.hook.received
    assert digest["kind"] == "digest" and [i["title"] for i in digest["items"]] == ["one", "two"]


async def test_sigkill_with_a_group_open_and_in_quiet_hours_sends_each_once(setup: Setup) -> None:
    grouped = rules(", group: {wait: 3s}")
    daemon = Daemon(setup.write(grouped), setup.tmp)
    try:
        await _kill_and_restart(setup, daemon)
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
        daemon.notify.close()


async def _kill_and_restart(setup: Setup, daemon: Daemon) -> None:
    ids = [mail(setup, f"grouped {n}") for n in range(3)]
    await daemon.start()
    await daemon.wait_for("READY=1")
    await eventually(lambda: _status_says(daemon.config, "grouped: 3 items"), "the group open")
    daemon.proc.send_signal(signal.SIGKILL)
    await daemon.proc.wait()
    await daemon.start()  # the same state: the open group sends once its wait is over
    await eventually(lambda: setup.hook.received, "the digest", seconds=20)
    await asyncio.sleep(2)
    daemon.proc.send_signal(signal.SIGKILL)
    await daemon.proc.wait()
    (digest,) = setup.hook.received
    assert sorted(i["item_id"] for i in digest["items"]) == sorted(ids)
    # quiet hours now: held; killed and restarted: still held, nothing sent twice
    with_sink(setup, setup.write(rules()), around_now())
    quiet = mail(setup, "at night")
    await daemon.start()
    await eventually(lambda: _status_says(daemon.config, "1 held: quiet hours"), "held")
    daemon.proc.send_signal(signal.SIGKILL)
    await daemon.proc.wait()
    await daemon.start()
    await daemon.wait_for("READY=1")
    await asyncio.sleep(2)
    assert len(setup.hook.received) == 1
    _, out, _ = await inboxbot(daemon.config, "outbox", "--json")
    assert quiet in out
    daemon.proc.send_signal(signal.SIGTERM)
    await daemon.proc.wait()
    assert setup.hook.duplicates() == 0


async def _status_says(config: Path, text: str) -> tuple[int, str, str] | None:
    found = await inboxbot(config, "status")
    return found if text in found[1] else None
