"""`inboxbot explain`, `render` and `test-rules`, run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bot.cli import main
from tests.conftest import Setup

RULES = """\
- name: codes
  when: {kind: email, subject: {contains: code}}
  extract: {code: {from: text, regex: '(\\d{6})'}}
  notify: [{sink: screen, title: "Code {{ code }}", message: ""}]
  then: [mark_read]
  stop: true
- name: everything
  when: {kind: email, unread: true}
  notify: [{sink: hooks, template: email}]
"""


async def inboxbot(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_explain_shows_which_rules_fire_and_why_and_changes_nothing(setup: Setup) -> None:
    code = setup.sim.add_message(
        setup.account, sender="a@example.com", subject="Your code", text_body="Use 123456"
    )
    setup.sim.add_message(
        setup.account, sender="b@example.com", subject="News", text_body="hi", is_read=True
    )
    config = setup.write(RULES)
    status, out = await inboxbot("--config", str(config), "explain")
    assert status == 0, out
    assert "inbox/messages: 2 items listed" in out
    assert (
        "+ codes: yes (code='123456')" in out
        and "deliver screen: 'Code 123456'" in out
        and "act mark_read" in out
    )
    assert "- everything: no (an earlier rule stopped)" in out
    assert "- codes: no (subject)" in out and "- everything: no (unread)" in out
    assert setup.hook.received == [] and not setup.sim.message(code).is_read
    assert not (setup.tmp / "state.db").exists()


async def test_explain_says_when_a_poll_fails(setup: Setup) -> None:
    config = setup.write(RULES)
    setup.sim.set_down(True)
    status, out = await inboxbot("--config", str(config), "explain")
    assert status == 1 and "inbox/messages: poll failed" in out and setup.account.token not in out


def test_render_a_template_for_an_item(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup.write(RULES)
    item = setup.tmp / "item.json"
    item.write_text(json.dumps({"item": {"subject": "Hello {{ 7*7 }}", "text": "Body"}}))
    assert main(["--config", str(config), "render", "email", "--item", str(item)]) == 0
    assert capsys.readouterr().out == "Hello {{ 7*7 }}\n\nBody\n"
    item.write_text(json.dumps({"colour": "red"}))
    assert main(["--config", str(config), "render", "email", "--item", str(item)]) == 2
    assert "unknown item fields ['colour']" in capsys.readouterr().err


def test_render_as_a_sink_gets_it(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    sink = f'  md: {{type: webhook, url: "{setup.hook.url}", format: markdown}}\n'
    config = str(setup.write(RULES, sinks=sink))
    item = setup.tmp / "item.json"
    item.write_text(json.dumps({"subject": "*Hi*", "text": "<b>@here</b>"}))
    assert main(["--config", config, "render", "email", "--item", str(item), "--sink", "md"]) == 0
    assert capsys.readouterr().out == "*Hi*\n\n\\<b\\>@here\\</b\\>\n"
    assert main(["--config", config, "render", "email", "--item", str(item), "--sink", "no"]) == 2
    assert capsys.readouterr().err.strip() == "no sink 'no'; sinks: hooks, screen, md"


CASES = """\
- name: a code
  item: {subject: "Your code", text: "Use 654321"}
  match: [codes]
  extract: {code: "654321"}
- name: news
  item: {subject: "News", unread: true}
  match: [everything]
"""


def test_rule_tests_pass_and_fail(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup.write(RULES)
    cases = setup.tmp / "cases.yaml"
    cases.write_text(CASES)
    assert main(["--config", str(config), "test-rules", str(cases)]) == 0
    assert capsys.readouterr().out == "PASS a code\nPASS news\n2 passed, 0 failed\n"
    cases.write_text(CASES.replace('code: "654321"', 'code: "000000"'))
    assert main(["--config", str(config), "test-rules", str(cases)]) == 1
    assert "FAIL a code: extract code='654321', expected '000000'" in capsys.readouterr().out


def test_a_broken_rule_test_file_is_located(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup.write(RULES)
    cases = tmp_path / "bad.yaml"
    cases.write_text("- item: {subject: x}\n- item: {colour: red}\n")
    assert main(["--config", str(config), "test-rules", str(cases)]) == 2
    assert capsys.readouterr().err.startswith(f"{cases}:2: 1.item: unknown item fields ['colour']")


def test_bad_inputs_get_one_line(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup.write(RULES)
    bad = setup.tmp / "bad.json"
    bad.write_text("{bad")
    assert main(["--config", str(config), "render", "email", "--item", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"{bad}: not JSON:")
    assert (
        main(["--config", str(config), "render", "email", "--item", str(setup.tmp / "none.json")])
        == 2
    )
    assert (
        capsys.readouterr().err.strip() == f"{setup.tmp / 'none.json'}: No such file or directory"
    )
    assert main(["--config", str(config), "--state", "/nonexistent/dir/state.db", "once"]) == 1
    err = capsys.readouterr().err
    assert (
        "state /nonexistent/dir/state.db: cannot create state.db.lock: No such file" in err
        and "Traceback" not in err
    )


async def test_send_test_reports_success_and_the_exact_failure(setup: Setup) -> None:
    config = str(setup.write())
    code, out = await inboxbot("--config", config, "send-test", "hooks")
    assert code == 0 and out.strip() == "sink hooks (webhook): sent"
    assert setup.hook.received[0]["title"] == "inboxbot test notification"
    setup.hook.fail(401)
    code, out = await inboxbot("--config", config, "send-test", "hooks")
    assert code == 1
    assert "sink hooks (webhook): not sent: hooks: POST " in out
    assert "HTTP 401" in out and "credentials refused" in out
    assert setup.hook.url not in out  # the URL may hold a token
    setup.hook.fail(503)
    code, out = await inboxbot("--config", config, "send-test", "hooks")
    assert code == 1 and "HTTP 503" in out and "try again later" in out


def test_send_test_names_the_configured_sinks(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(setup.write())
    assert main(["--config", config, "send-test", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "no sink 'nope'; sinks: hooks, screen"
