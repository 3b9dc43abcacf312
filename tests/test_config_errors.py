"""Broken configurations: each gives one line `file:line: message`, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.sources import SOURCES

CONFIG = """\
accounts:
  signup:
    type: mailtd
    account_id: me@mail.td
    token: td_secret_token_value
    every: 30s
sinks:
  hooks: {type: webhook, url: "http://127.0.0.1:9/hook"}
  screen: {type: console}
rules: [rules/*.yaml]
templates: [templates]
"""

RULES = """\
- name: new-mail
  when: {kind: email, unread: true}
  notify: [{sink: screen, template: email}]
  then: [mark_read]
"""

TEMPLATE = "{% block title %}{{ item.subject }}{% endblock %}\n{% block message %}{{ item.text }}{% endblock %}\n"

# (what is broken, file, replace this, with that, expected line, expected text in the message)
CASES = [
    ("unknown top key", "inboxbot.yaml", "rules: [", "rulez: [", 10, "rulez: unknown key"),
    (
        "unknown account key",
        "inboxbot.yaml",
        "    every: 30s",
        "    evry: 30s",
        6,
        "accounts.signup.evry: unknown key",
    ),
    ("bad duration", "inboxbot.yaml", "every: 30s", "every: soon", 6, "'soon' is not a duration"),
    (
        "missing key",
        "inboxbot.yaml",
        "    account_id: me@mail.td\n",
        "",
        2,
        "account_id: required key is missing",
    ),
    (
        "unknown account type",
        "inboxbot.yaml",
        "type: mailtd",
        "type: gmail",
        3,
        "'gmail'; allowed: " + ", ".join(sorted(SOURCES)),
    ),
    (
        "unknown sink type",
        "inboxbot.yaml",
        "type: console",
        "type: pager",
        9,
        "'pager'; allowed: console",
    ),
    (
        "missing variable",
        "inboxbot.yaml",
        "td_secret_token_value",
        "${NO_SUCH_VAR_FOR_TEST}",
        5,
        "environment variable NO_SUCH_VAR_FOR_TEST is not set",
    ),
    (
        "missing secret file",
        "inboxbot.yaml",
        "td_secret_token_value",
        "${file:/nonexistent/secret}",
        5,
        "cannot read /nonexistent/secret",
    ),
    (
        "yaml syntax",
        "inboxbot.yaml",
        "  screen: {type: console}",
        "  screen: {type: console",
        10,
        "YAML syntax error",
    ),
    (
        "duplicate key",
        "inboxbot.yaml",
        "  screen: {type: console}",
        "  screen: {type: console}\n  screen: {type: console}",
        10,
        "duplicate key 'screen'",
    ),
    (
        "bad backlog",
        "inboxbot.yaml",
        "templates: [templates]",
        "templates: [templates]\nbacklog: maybe",
        12,
        "backlog: Input should be 'skip' or 'notify', not 'maybe'",
    ),
    (
        "wrong type",
        "inboxbot.yaml",
        "templates: [templates]",
        "templates: [templates]\nmax_actions_per_poll: many",
        12,
        "max_actions_per_poll: Input should be a valid integer",
    ),
    (
        "bad sink rate",
        "inboxbot.yaml",
        "{type: console}",
        "{type: console, rate: fast}",
        9,
        "'fast' is not a rate",
    ),
    (
        "unknown feed",
        "inboxbot.yaml",
        "    every: 30s",
        "    feeds: {inbox: {every: 1m}}",
        6,
        "unknown feed 'inbox'; allowed: messages",
    ),
    (
        "rule unknown key",
        "rules/r.yaml",
        "  when:",
        "  wen:",
        2,
        "rule 'new-mail' wen: unknown key",
    ),
    (
        "rule bad regex",
        "rules/r.yaml",
        "unread: true}",
        "subject: {regex: '(unclosed'}}",
        2,
        "bad regex '(unclosed'",
    ),
    (
        "rule unknown field",
        "rules/r.yaml",
        "unread: true",
        "colour: red",
        2,
        "unknown field 'colour'",
    ),
    (
        "rule unknown operator",
        "rules/r.yaml",
        "unread: true}",
        "subject: {like: x}}",
        2,
        "unknown operator 'like'",
    ),
    (
        "rule bad age",
        "rules/r.yaml",
        "unread: true}",
        "age: {lt: soonish}}",
        2,
        "'soonish' is not a duration",
    ),
    (
        "rule unknown sink",
        "rules/r.yaml",
        "sink: screen",
        "sink: pager",
        3,
        "unknown sink 'pager'; configured: hooks, screen",
    ),
    (
        "notify option the sink does not take",
        "rules/r.yaml",
        "template: email}",
        "template: email, options: {attach: true}}",
        3,
        "notify.0.options.attach: sink 'screen' (console) has no such option; it takes: none",
    ),
    (
        "sink format the target does not have",
        "inboxbot.yaml",
        "screen: {type: console}",
        "screen: {type: console, format: html}",
        9,
        "sinks.screen.format: ",
    ),
    ("rule unknown template", "rules/r.yaml", "template: email", "template: nope", 3, "nope"),
    (
        "rule impossible action",
        "rules/r.yaml",
        "then: [mark_read]",
        "then: [hide]",
        4,
        "action 'hide' is not available for account 'signup' (mailtd email); it can do: delete, mark_read",
    ),
    (
        "rule bad delay",
        "rules/r.yaml",
        "then: [mark_read]",
        "then: [{delete: {after: never}}]",
        4,
        "'never' is not a duration",
    ),
    (
        "rule template and title",
        "rules/r.yaml",
        "template: email}",
        "template: email, title: x}",
        3,
        "either template or title/message",
    ),
    (
        "rule extract bad regex",
        "rules/r.yaml",
        "  then: [mark_read]",
        "  extract: {code: {from: text, regex: '[a-'}}",
        4,
        "bad regex '[a-'",
    ),
    (
        "rules file not a list",
        "rules/r.yaml",
        RULES,
        "name: x\n",
        1,
        "a rule file is a list of rules",
    ),
    (
        "rules name no file",
        "inboxbot.yaml",
        "rules: [rules/*.yaml]",
        "rules: [rulez/*.yaml]",
        10,
        "rules: 'rulez/*.yaml' names no file",
    ),
    (
        "no template folder",
        "inboxbot.yaml",
        "templates: [templates]",
        "templates: [tmpl]",
        11,
        "tmpl is not a folder",
    ),
    (
        "internal key",
        "inboxbot.yaml",
        "rules: [",
        "_base_dir: /\nrules: [",
        10,
        "_base_dir: unknown key",
    ),
    (
        "unknown alert sink",
        "inboxbot.yaml",
        "rules: [",
        "alerts_to: pager\nrules: [",
        10,
        "alerts_to: unknown sink 'pager'; configured: hooks, screen",
    ),
    ("template syntax", "templates/email.j2", "{{ item.text }}", "{{ item.text }", 2, "email.j2"),
]


def write(tmp_path: Path, file: str, old: str, new: str) -> Path:
    files = {"inboxbot.yaml": CONFIG, "rules/r.yaml": RULES, "templates/email.j2": TEMPLATE}
    assert old in files[file], f"case does not apply: {old!r}"
    files[file] = files[file].replace(old, new, 1)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "inboxbot.yaml"


def test_the_base_configuration_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "inboxbot.yaml", "", "")
    assert main(["--config", str(config), "check"]) == 0
    assert "ok (1 feeds, 1 rules, 2 sinks)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("case", "file", "old", "new", "line", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_a_broken_file_gives_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    case: str, file: str, old: str, new: str, line: int, text: str,
) -> None:  # fmt: skip
    config = write(tmp_path, file, old, new)
    assert main(["--config", str(config), "check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{tmp_path / file}:{line}: "), err
    assert text in err
    assert "td_secret_token_value" not in err


def test_check_as_a_command_exits_2_without_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, "rules/r.yaml", "then: [mark_read]", "then: [hide]")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{tmp_path / 'rules/r.yaml'}:4: ")


def test_the_config_file_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "inboxbot.yaml", "", "")
    monkeypatch.setenv("INBOXBOT_CONFIG", str(config))
    assert main(["check"]) == 0
