"""`explain` and `test-rules` show noise control: what applies to a notification, and
what it would do at a given moment; a case can expect a digest's text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import load
from bot.held import Mute
from bot.tools import explain
from tests.conftest import Setup

QUIET = 'quiet: {from: "22:00", to: "07:00", tz: Europe/Berlin, except: urgent}, limit: 5/10min'
RULES = """\
- name: news
  when: {kind: email, subject: {contains: news}}
  limit: 20/1h
  notify:
    - {sink: hooks, title: "{{ item.subject }}", message: "x", group: {by: [account], wait: 1m}}
- name: codes
  when: {kind: email, subject: {contains: code}}
  notify: [{sink: hooks, title: "Code", message: "{{ item.subject }}", priority: urgent}]
- name: other
  when: {kind: email, subject: {not: {contains: code}}}
  notify: [{sink: hooks, title: "{{ item.subject }}", message: "from {{ item.sender }}"}]
"""


def configured(setup: Setup) -> Path:
    config = setup.write(RULES)
    line = f'  hooks: {{type: webhook, url: "{setup.hook.url}"}}\n'
    config.write_text(config.read_text().replace(line, line[:-2] + f", {QUIET}}}\n"))
    return config


def run_cases(config: Path, cases: str) -> subprocess.CompletedProcess[str]:
    (config.parent / "cases.yaml").write_text(cases)
    return subprocess.run(
        [sys.executable, "-m", "bot", "test-rules", "cases.yaml", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=config.parent,
    )  # fmt: skip


CASES = """\
- name: a newsletter is grouped
  item: {subject: "Weekly news"}
  match: [news, other]
  send: {hooks: grouped}
- name: at night the rest waits for the morning
  now: 2026-12-04T23:30:00+01:00
  item: {subject: "Invoice"}
  match: [other]
  send: {hooks: "held until 07:00 Europe/Berlin"}
- name: a code breaks through
  now: 2026-12-04T23:30:00+01:00
  item: {subject: "Your code 123"}
  match: [codes]
  send: {hooks: sent}
- name: by day it is sent
  now: 2026-12-04T12:00:00+01:00
  item: {subject: "Invoice"}
  match: [other]
  send: {hooks: sent}
- name: muted
  item: {subject: "Invoice", sender: boss@example.org}
  match: [other]
  mutes: [{match: {sender: BOSS@example.org}}]
  send: {hooks: muted}
- name: three newsletters are one digest
  items: [{subject: "A news"}, {subject: "B news"}, {subject: "C news"}]
  match: [news, other]
  digest:
    hooks: |
      news: 3 notifications (account inbox)

      • A news
      • B news
      • C news
"""


def test_test_rules_expects_what_noise_control_does(setup: Setup) -> None:
    proc = run_cases(configured(setup), CASES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "6 passed, 0 failed"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("send: {hooks: grouped}", "send: {hooks: sent}"), "to hooks: grouped, expected sent"),
        (('send: {hooks: "held until 07:00 Europe/Berlin"}', 'send: {hooks: "held until 06:00 Europe/Berlin"}'),
         "to hooks: held until 07:00 Europe/Berlin, expected held until 06:00 Europe/Berlin"),
        (("• B news", "• D news"), "digest to hooks was:\nnews: 3 notifications (account inbox)"),
        (("send: {hooks: muted}", "send: {screen: muted}"), "to screen: not notified, expected muted"),
    ],
)  # fmt: skip
def test_a_wrong_expectation_fails_the_case(
    setup: Setup, change: tuple[str, str], says: str
) -> None:
    proc = run_cases(configured(setup), CASES.replace(*change))
    assert proc.returncode == 1 and says in proc.stdout, proc.stdout + proc.stderr


def test_a_now_without_zone_is_refused_where_it_is(setup: Setup) -> None:
    proc = run_cases(
        configured(setup), CASES.replace("2026-12-04T23:30:00+01:00", "2026-12-04T23:30", 1)
    )
    assert proc.returncode == 2
    assert "cases.yaml:6: 1.now: '2026-12-04T23:30' is not a time with its zone" in proc.stderr


async def test_explain_names_what_applies_and_what_it_does_now(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.sim.add_message(
        setup.account, sender="a@example.com", subject="Weekly news", text_body="x"
    )
    mute = Mute(4, None, "", False, rule="other", match={"subject": "weekly news"})
    assert await explain(load(configured(setup)), None, [mute]) == 0
    out = capsys.readouterr().out
    assert "polled every 1s: 3600 requests an hour when nothing is new" in out
    assert "grouped by account: first after 1m, then every 10m, 25 listed per message" in out
    assert (
        "quiet 22:00–07:00 Europe/Berlin, sent at the end as one digest per rule, urgent and above break through"
        in out
    )
    assert "sink limit 5/10min: the rest of a window in one digest" in out
    assert "rule limit 20/hour per sink" in out
    assert "mute 4 (rule other, subject=weekly news)" in out
    assert "now: grouped" in out and "now: muted" in out
