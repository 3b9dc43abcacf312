"""What a newcomer runs first: a minimal configuration from another folder, options after the
command, cron-style `once`, two daemons on one state, and a template that fails on an item."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from tests.conftest import Setup
from tests.test_daemon import until

MINIMAL_RULES = """\
- name: all
  when: {kind: email}
  notify: [{sink: hooks, title: "{{ item.subject }}", message: "{{ item.sender }}"}]
"""


def minimal(setup: Setup, folder: Path, rules: str = MINIMAL_RULES) -> Path:
    """One account, one sink, one rule file, no other key, no templates folder."""
    folder.mkdir()
    (folder / "rules.yaml").write_text(rules)
    config = folder / "inboxbot.yaml"
    config.write_text(
        f"accounts:\n  signup: {{type: mailtd, base_url: {setup.sim.base_url}, "
        f"account_id: {setup.account.address}, token: {setup.account.token}}}\n"
        f'sinks:\n  hooks: {{type: webhook, url: "{setup.hook.url}"}}\n'
        "rules: [rules.yaml]\n"
    )
    return config


async def inboxbot(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "INBOXBOT_LISTEN": "", "INBOXBOT_LOG_LEVEL": "info"}, cwd=cwd,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_a_minimal_configuration_works_from_another_folder(
    setup: Setup, tmp_path: Path
) -> None:
    config = minimal(setup, tmp_path / "conf")
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    code, out = await inboxbot("check", "--config", str(config), cwd=elsewhere)
    assert code == 0, out
    # backlog: skip (the default) marks what is there as seen; then a new mail is notified
    assert (await inboxbot("once", "-c", str(config), cwd=elsewhere))[0] == 0
    sent = setup.sim.add_message(setup.account, sender="a@example.org", subject="hello")
    code, out = await inboxbot("once", "-c", str(config), "--grace", "0", cwd=elsewhere)
    assert code == 0, out
    assert [b["item_id"] for b in setup.hook.received] == [sent]
    assert (config.parent / "state.db").is_file() and not (elsewhere / "state.db").exists()
    assert f"state={config.parent / 'state.db'}" in out and "feeds=signup/messages@30s" in out


async def test_once_delivers_within_its_grace_when_the_target_refuses_twice(
    setup: Setup, tmp_path: Path
) -> None:
    config = minimal(setup, tmp_path / "conf")
    (config.parent / "inboxbot.yaml").write_text(config.read_text() + "backlog: notify\n")
    ids = [
        setup.sim.add_message(setup.account, sender="a@example.org", subject=f"mail {n}")
        for n in range(38)
    ]
    setup.hook.fail(503, count=1, headers={"Retry-After": "1"})
    setup.hook.fail(429, count=1, headers={"Retry-After": "1"})
    code, out = await inboxbot("once", "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    got = [b["item_id"] for b in setup.hook.received if b["item_id"] in ids]
    assert sorted(got) == sorted(ids) and len(set(got)) == 38


async def test_once_without_grace_says_what_is_left(setup: Setup, tmp_path: Path) -> None:
    config = minimal(setup, tmp_path / "conf")
    (config.parent / "inboxbot.yaml").write_text(config.read_text() + "backlog: notify\n")
    setup.sim.add_message(setup.account, sender="a@example.org", subject="waits")
    setup.hook.fail(503, count=1, headers={"Retry-After": "1"})
    code, out = await inboxbot("once", "--grace", "0", "--config", str(config), cwd=tmp_path)
    assert code == 1 and "queued=1" in out, out


async def test_a_second_daemon_on_the_same_state_is_refused(setup: Setup) -> None:
    config = setup.write()
    env = {**os.environ, "INBOXBOT_LISTEN": ""}
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE, env=env, cwd=setup.tmp,
    )  # fmt: skip
    try:
        assert await until(lambda: (setup.tmp / "state.db.lock").exists(), 10)
        await asyncio.sleep(0.5)
        for command in ("run", "once"):
            code, out = await inboxbot(command, "--config", str(config), cwd=setup.tmp)
            assert code == 1 and f"state.db is in use by PID {first.pid}" in out, out
        # the helpers that only read do not need the lock
        assert (await inboxbot("check", "--config", str(config), cwd=setup.tmp))[0] == 0
    finally:
        first.terminate()
        await first.wait()
    code, out = await inboxbot("once", "--config", str(config), cwd=setup.tmp)
    assert code == 0, out  # released when the first one ended


async def test_a_template_failing_on_an_item_is_a_failed_step_not_a_lost_one(
    setup: Setup,
) -> None:
    # a sender without a domain: check cannot know, only the real item shows it
    rules = MINIMAL_RULES.replace("{{ item.sender }}", "{{ item.sender.split('@')[1] }}")
    config = minimal(setup, setup.tmp / "conf", rules)
    config.write_text(config.read_text() + "backlog: notify\n")
    setup.sim.add_message(setup.account, sender="postmaster", subject="no domain")
    code, out = await inboxbot("once", "--config", str(config), cwd=setup.tmp)
    assert code == 1 and "render failed" in out and "failed=1" in out, out
    db = sqlite3.connect(config.parent / "state.db")
    rows = db.execute("SELECT kind, target, status, last_error FROM steps").fetchall()
    assert [(k, t, s) for k, t, s, _ in rows] == [("deliver", "hooks", "failed")]
    assert "rules.yaml:3" in rows[0][3] and "has no element 1" in rows[0][3], rows
    assert setup.hook.received == []


async def test_a_failed_render_fixed_in_the_rule_is_sent_by_retry(setup: Setup) -> None:
    rules = MINIMAL_RULES.replace("{{ item.sender }}", "{{ item.sender.split('@')[1] }}")
    config = minimal(setup, setup.tmp / "conf", rules)
    config.write_text(config.read_text() + "backlog: notify\n")
    sent = setup.sim.add_message(setup.account, sender="postmaster", subject="no domain")
    assert (await inboxbot("once", "--config", str(config), cwd=setup.tmp))[0] == 1
    (config.parent / "rules.yaml").write_text(MINIMAL_RULES)  # the user fixes the template
    code, out = await inboxbot("retry", "--sink", "hooks", "--config", str(config), cwd=setup.tmp)
    assert code == 0 and "1 step" in out, out
    code, out = await inboxbot("once", "--config", str(config), cwd=setup.tmp)
    assert code == 0, out
    assert [(b["item_id"], b["message"]) for b in setup.hook.received] == [(sent, "postmaster")]


async def test_check_warns_of_what_no_rule_reaches(setup: Setup, tmp_path: Path) -> None:
    config = minimal(setup, tmp_path / "conf")
    text = config.read_text()
    config.write_text(text.replace("rules: [rules.yaml]\n", ""))  # rules/*.yaml: none there
    code, out = await inboxbot("check", "--config", str(config), cwd=tmp_path)
    assert code == 0 and "inboxbot.yaml:1: warning: rules: no rule is loaded" in out, out
    extra = (
        f"  spare: {{type: mailtd, base_url: {setup.sim.base_url}, account_id: x@mail.td, "
        "token: t}\n"
    )
    text = text.replace("sinks:\n", extra + "sinks:\n  idle: {type: console}\n")
    config.write_text(text)
    rules = config.parent / "rules.yaml"
    rules.write_text(MINIMAL_RULES.replace("{kind: email}", "{account: signup}"))
    code, out = await inboxbot("check", "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    assert "inboxbot.yaml:3: warning: accounts.spare: no rule sees its items" in out, out
    assert "inboxbot.yaml:5: warning: sinks.idle: no rule sends to it" in out, out
