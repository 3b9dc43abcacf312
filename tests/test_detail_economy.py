"""Details only when something reads them: over HTTP, Mail.td simulator → Pipeline → webhook.

The simulator records every request; a detail is a GET of one message."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jinja2 import Environment

from bot.app import load
from bot.pipeline import Pipeline
from bot.render import raw_keys, truncate
from bot.sim.mailtd import MailTdSim
from bot.sources import Feed
from bot.tools import explain, item_from
from tests.conftest import Setup

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)
BODY = "Dear customer, " + "this line is longer than any preview. " * 5 + "Total 42 EUR."
ITEM_KEYS = {
    "account", "feed", "kind", "id", "created_at", "sender", "recipient", "subject", "text",
    "html", "unread", "url", "attachments", "links", "upstream", "complete",
}  # fmt: skip

SUMMARY_ONLY = """\
- name: everything
  when: {kind: email, unread: true, raw.is_read: false, if: "{{ item.raw['size'] > 0 }}"}
  notify:
    - sink: hooks
      title: "{{ item.subject }}"
      message: "from {{ item.sender }}, {{ item.raw.size }} bytes, {{ item.age | ago }}"
"""

BODY_TEMPLATE = """\
- name: invoices
  when: {kind: email, subject: {contains: invoice}}
  notify: [{sink: hooks, template: email}]
"""

WHOLE_ITEM = """\
- name: everything
  when: {kind: email}
  notify: [{sink: full, title: "{{ item.subject }}", message: ""}]
"""

FULL_SINK = '  full: {{type: webhook, url: "{url}", detail: true}}\n'


def detail_ids(sim: MailTdSim) -> list[str]:
    """The ids of the messages whose detail was asked for, in order."""
    prefix = "/messages/"
    return [
        r.path.split(prefix, 1)[1]
        for r in sim.requests
        if r.method == "GET" and prefix in r.path and "/" not in r.path.split(prefix, 1)[1]
    ]


def list_requests(sim: MailTdSim) -> int:
    return sum(1 for r in sim.requests if r.method == "GET" and r.path.endswith("/messages"))


def mails(setup: Setup, count: int, subject: str = "mail {}") -> list[str]:
    setup.account.rate_limit = 1000  # the client's own rate (50/s) is the limit here
    return [
        setup.sim.add_message(
            setup.account, sender="bob@example.com", subject=subject.format(i), text_body=BODY
        )
        for i in range(count)
    ]


async def cycle(pipe: Pipeline) -> int:
    added = await pipe.poll(FEED)
    await pipe.flush()
    return added


async def test_summary_only_rules_make_no_detail_request_for_100_mails(setup: Setup) -> None:
    ids = mails(setup, 100)
    async with setup.pipeline(SUMMARY_ONLY, rate=50) as pipe:
        assert await cycle(pipe) == 100
    assert detail_ids(setup.sim) == [] and list_requests(setup.sim) >= 1
    received = setup.hook.received
    assert sorted(b["item_id"] for b in received) == sorted(ids)
    for body in received:
        item = body["item"]
        assert set(item) == ITEM_KEYS and item["complete"] is False
        assert item["text"] == " ".join(BODY.split())[:100]  # the list's preview
        assert (item["html"], item["attachments"], item["links"]) == (None, [], [])
        assert body["message"].startswith("from bob@example.com, ")
    assert item_from(received[0]).subject == received[0]["title"]  # `render --item` takes it


async def test_a_template_reading_the_text_fetches_one_detail_per_matching_mail(
    setup: Setup,
) -> None:
    invoices = mails(setup, 30, "invoice {}")
    others = mails(setup, 70, "news {}")
    async with setup.pipeline(BODY_TEMPLATE, rate=50) as pipe:
        assert await cycle(pipe) == 100
    assert sorted(detail_ids(setup.sim)) == sorted(invoices)
    assert not set(detail_ids(setup.sim)) & set(others)
    received = setup.hook.received
    assert sorted(b["item_id"] for b in received) == sorted(invoices)
    assert all(b["item"]["complete"] is True and b["item"]["text"] == BODY for b in received)
    assert all(b["message"] == truncate(BODY, 100) for b in received)


async def test_a_webhook_with_detail_true_fetches_every_mail(setup: Setup) -> None:
    ids = mails(setup, 100)
    sinks = FULL_SINK.format(url=setup.hook.url)
    async with setup.pipeline(WHOLE_ITEM, rate=50, sinks=sinks) as pipe:
        assert await cycle(pipe) == 100
    assert sorted(detail_ids(setup.sim)) == sorted(ids)
    received = setup.hook.received
    assert len(received) == 100
    assert all(b["item"]["complete"] is True and b["item"]["text"] == BODY for b in received)
    assert all(set(b["item"]) == ITEM_KEYS for b in received)


async def test_a_detail_sink_skips_the_detail_of_mail_the_summary_rules_out(
    setup: Setup,
) -> None:
    invoices = mails(setup, 3, "invoice {}")
    mails(setup, 5, "news {}")
    rules = WHOLE_ITEM.replace("{kind: email}", "{kind: email, subject: {contains: invoice}}")
    sinks = FULL_SINK.format(url=setup.hook.url)
    async with setup.pipeline(rules, rate=50, sinks=sinks) as pipe:
        await cycle(pipe)
    assert sorted(detail_ids(setup.sim)) == sorted(invoices)


RAW_ONLY_IN_DETAIL = """\
- name: secret
  when: {kind: email, raw.text_body: {contains: secret}}
  notify: [{sink: hooks, title: "{{ item.subject }}", message: ""}]
"""


async def test_a_raw_key_only_the_detail_has_fetches_it(setup: Setup) -> None:
    """`is_read` is in the list (no detail above); `text_body` only in the detail: a
    condition on it must not be judged on the summary, where it is missing."""
    plain = mails(setup, 2)
    secret = setup.sim.add_message(
        setup.account, sender="eve@example.com", subject="psst", text_body="the secret is 7"
    )
    async with setup.pipeline(RAW_ONLY_IN_DETAIL, rate=50) as pipe:
        await cycle(pipe)
    assert sorted(detail_ids(setup.sim)) == sorted([*plain, secret])
    assert [b["item_id"] for b in setup.hook.received] == [secret]


EXPLAINED = """\
- name: bodies
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
- name: subjects
  when: {kind: email}
  notify: [{sink: hooks, title: "{{ item.subject }}", message: "{{ item.raw.is_read }}"}]
- name: totals
  when: {subject: {contains: invoice}, text: {contains: total}}
- name: whole
  when: {kind: email}
  notify: [{sink: full, title: "{{ item.subject }}", message: ""}]
- name: raw-body
  when: {if: "{{ 'x' in (item.raw.html_body or '') }}"}
"""


async def test_explain_prints_whether_each_rule_needs_the_detail_and_why(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mails(setup, 1, "hello")
    config = setup.write(EXPLAINED, sinks=FULL_SINK.format(url=setup.hook.url))
    assert await explain(load(config), None) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    by_rule = {lines[i].split(":")[0][2:]: lines[i + 1] for i in range(len(lines) - 1)
               if lines[i][:2] in ("+ ", "- ")}  # fmt: skip
    assert by_rule == {
        "bodies": "detail: yes (template 'email' reads item.text)",
        "subjects": "detail: no (summary is enough)",
        "totals": "detail: no (condition 'text' reads item.text, "
        "but 'subject' rules it out on the summary)",
        "whole": "detail: yes (sink 'full' has detail: true)",
        "raw-body": "detail: yes (condition 'if' reads raw.html_body)",
    }


def test_mqtt_and_smtp_say_when_they_need_the_detail(setup: Setup) -> None:
    sinks = (
        "  ha: {type: mqtt, url: 'mqtt://127.0.0.1:1', discovery: false}\n"
        "  ha_full: {type: mqtt, url: 'mqtt://127.0.0.1:1', discovery: false, detail: true}\n"
        "  mail: {type: smtp, host: 127.0.0.1, port: 1, from: a@example.org,"
        " to: [b@example.org]}\n"
    )
    rules = "".join(
        f"- name: {sink}\n  notify: [{{sink: {sink}, title: t, message: m{options}}}]\n"
        for sink, options in [("ha", ""), ("ha_full", ""), ("mail", ", options: {attach: true}")]
    )
    loaded = load(setup.write(rules, sinks=sinks))
    assert [(r.name, r.needs_detail) for r in loaded.rules] == [
        ("ha", False),
        ("ha_full", True),
        ("mail", True),
    ]
    assert loaded.rules[2].detail.reasons({}) == ["sink 'mail' attaches the item's files"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ item.subject }}", set()),
        ("{{ item.raw.is_read }} {{ item.raw['size'] }}", {"is_read", "size"}),
        ("{% if item.raw.a.b %}{% endif %}", {"a"}),
        ("{{ item.raw }}", None),
        ("{{ item.raw.get('x') }}", None),
        ("{{ item.raw[key] }}", None),
        ("{{ item }}", None),
    ],
)
def test_raw_keys_read_by_a_template(source: str, expected: set[str] | None) -> None:
    found = raw_keys(Environment().parse(source))
    assert found == (None if expected is None else frozenset(expected))
