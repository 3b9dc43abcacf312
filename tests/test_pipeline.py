"""The whole path over HTTP: simulator → poll → store → rules → webhook → actions."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from bot.app import load, running
from bot.errors import AuthError, RemoteError, TransientError
from bot.pipeline import IN_FLIGHT, Pipeline, backoff, sink_rate
from bot.polling import rest
from bot.sim.webhook import HookReceiver
from bot.sinks import SINKS
from bot.sources import Feed
from tests.conftest import DEFAULT_RULES, Setup

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)


async def cycle(pipe: Pipeline) -> int:
    added = await pipe.poll(FEED)
    await pipe.flush()
    return added


def mail(setup: Setup, subject: str = "Hello", **kwargs: object) -> str:
    kwargs.setdefault("text_body", f"Body of {subject}")
    return setup.sim.add_message(setup.account, sender="bob@example.com", subject=subject, **kwargs)  # type: ignore[arg-type]


async def test_each_new_mail_is_notified_once_then_marked_read(setup: Setup) -> None:
    ids = [mail(setup, f"mail {i}") for i in range(3)]
    async with setup.pipeline() as pipe:
        assert await cycle(pipe) == 3
        assert await cycle(pipe) == 0
        new = mail(setup, "later")
        assert await cycle(pipe) == 1
    assert sorted(b["item_id"] for b in setup.hook.received) == sorted([*ids, new])
    assert setup.hook.duplicates() == 0
    assert all(setup.sim.message(i).is_read for i in [*ids, new])


async def test_the_webhook_payload_is_the_documented_one(setup: Setup) -> None:
    mid = mail(
        setup,
        "Verify",
        html_body="<p>Go to <a href='https://x.example/verify?t=1'>link</a></p>",
        text_body=None,
    )
    async with setup.pipeline() as pipe:
        await cycle(pipe)
    body = setup.hook.received[0]
    assert set(body) == {"id", "rule", "account", "feed", "kind", "item_id", "title", "message",
                         "url", "priority", "item", "extract"}  # fmt: skip
    assert (body["rule"], body["account"], body["feed"], body["kind"]) == (
        "new-mail",
        "inbox",
        "messages",
        "email",
    )
    assert body["item_id"] == mid and body["title"] == "Verify"
    assert "raw" not in body["item"]
    assert body["item"]["links"] == ["https://x.example/verify?t=1"]
    assert body["item"]["text"] == "Go to link"
    assert body["item"]["complete"] is True  # the template reads item.text: detail fetched
    assert setup.hook.keys[body["id"]] == 1


async def test_backlog_skip_ignores_what_is_there_at_the_first_poll(setup: Setup) -> None:
    mail(setup, "old")
    async with setup.pipeline(backlog="skip") as pipe:
        assert await cycle(pipe) == 1
        assert setup.hook.received == []
        fresh = mail(setup, "new")
        await cycle(pipe)
    assert [b["item_id"] for b in setup.hook.received] == [fresh]


RULE_WITHOUT_BODY = """\
- name: subjects
  when: {kind: email, subject: {contains: invoice}}
  notify: [{sink: screen, title: "{{ item.subject }}", message: "from {{ item.sender }}"}]
"""

RULE_WITH_BODY = """\
- name: codes
  when: {kind: email, text: {regex: '\\d{6}'}}
  extract: {code: {from: text, regex: '(\\d{6})'}}
  notify: [{sink: screen, title: "Code {{ code }}", message: ""}]
"""


def detail_requests(setup: Setup) -> int:
    return sum(1 for r in setup.sim.requests if r.method == "GET" and "/messages/" in r.path)


async def test_the_detail_is_fetched_only_when_a_rule_needs_the_body(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mail(setup, "Your invoice")
    async with setup.pipeline(RULE_WITHOUT_BODY) as pipe:
        await cycle(pipe)
    assert detail_requests(setup) == 0
    assert "Your invoice" in capsys.readouterr().out


async def test_a_rule_on_the_body_fetches_the_detail(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mail(setup, "Welcome", text_body="Your code is 482913.")
    async with setup.pipeline(RULE_WITH_BODY) as pipe:
        await cycle(pipe)
    assert detail_requests(setup) == 1
    assert "Code 482913" in capsys.readouterr().out


async def test_actions_wait_for_delivery_and_a_failing_sink_keeps_the_mail(setup: Setup) -> None:
    mid = mail(setup, "important")
    setup.hook.fail(503, count=1)
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        assert setup.hook.received == [] and not setup.sim.message(mid).is_read
        assert pipe.store.outbox_depth() == 2  # the delivery and the mark_read behind it
        pipe.clock.time = lambda: time.time() + 3600  # type: ignore[method-assign]
        await cycle(pipe)
    assert [b["item_id"] for b in setup.hook.received] == [mid]
    assert setup.sim.message(mid).is_read


async def test_retry_after_is_honoured(setup: Setup) -> None:
    mail(setup)
    setup.hook.fail(429, headers={"Retry-After": "600"})
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        (step,) = pipe.store.pending_steps("deliver")
        assert step.due_at >= time.time() + 590
        await pipe.flush()
    assert setup.hook.received == []


TWO_SINKS = """\
- name: both
  when: {kind: email}
  notify: [{sink: screen, title: "{{ item.subject }}", message: ""}, {sink: hooks, template: email}]
"""


async def test_one_failing_sink_never_resends_to_another(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mail(setup, "twice?")
    setup.hook.fail(500, count=3)
    async with setup.pipeline(TWO_SINKS) as pipe:
        for hours in range(1, 5):
            await cycle(pipe)
            later = time.time() + hours * 7200
            pipe.clock.time = lambda later=later: later  # type: ignore[method-assign]
    assert capsys.readouterr().out.count("twice?") == 1
    assert len(setup.hook.received) == 1


async def test_a_permanent_failure_is_recorded_and_cancels_the_actions(setup: Setup) -> None:
    mid = mail(setup)
    setup.hook.fail(400)
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        await cycle(pipe)
        assert pipe.store.outbox_depth() == 0
    assert setup.hook.received == [] and not setup.sim.message(mid).is_read


@pytest.mark.parametrize("fault", ["status", "html", "truncated", "reset", "rate_limited", "quota"])
async def test_a_failed_poll_changes_nothing_and_loses_nothing(setup: Setup, fault: str) -> None:
    mid = mail(setup)
    async with setup.pipeline() as pipe:
        setup.sim.inject(fault, path="/messages")
        with pytest.raises(RemoteError):
            await pipe.poll(FEED)
        assert pipe.store.cursor(FEED.key) == (False, None)
        assert setup.hook.received == []
        pipe.clock.time = lambda: time.time() + 7200  # type: ignore[method-assign]
        await cycle(pipe)
    assert [b["item_id"] for b in setup.hook.received] == [mid]


async def test_a_slow_upstream_times_out_without_state_change(setup: Setup) -> None:
    mail(setup)
    async with setup.pipeline() as pipe:
        setup.sim.inject("latency", seconds=3.0)
        with pytest.raises(RemoteError, match="timed out"):
            await pipe.poll(FEED)
        assert pipe.store.cursor(FEED.key) == (False, None)


async def test_a_mail_whose_detail_fails_is_planned_at_a_later_poll(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mail(setup, "Welcome", text_body="code 123456")
    async with setup.pipeline(RULE_WITH_BODY) as pipe:
        setup.sim.inject("status", status=502, path="/messages/")
        assert await pipe.poll(FEED) == 1  # the list worked: the mail is stored, not planned
        assert capsys.readouterr().out == ""
        assert "inbox/messages details" in pipe.health.failing
        pipe.clock.time = lambda: time.time() + 60  # type: ignore[method-assign]
        await cycle(pipe)
    assert "Code 123456" in capsys.readouterr().out


async def test_an_expired_mail_is_dropped(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    gone = mail(setup, "expired one", text_body="code 111111")
    mail(setup, "fine one", text_body="code 222222")
    setup.sim.expire(gone)
    async with setup.pipeline(RULE_WITH_BODY) as pipe:
        await cycle(pipe)
        await cycle(pipe)
    out = capsys.readouterr().out
    assert "Code 222222" in out and "111111" not in out


async def test_unfinished_steps_resume_after_a_restart(setup: Setup) -> None:
    mid = mail(setup)
    async with setup.pipeline() as pipe:
        await pipe.poll(FEED)  # planned, not delivered: then the process "dies"
    assert setup.hook.received == []
    async with setup.pipeline() as pipe:
        await cycle(pipe)
    assert [b["item_id"] for b in setup.hook.received] == [mid]
    assert setup.sim.message(mid).is_read


MANY_ACTIONS = """\
- name: delete-all
  when: {kind: email}
  then: [delete]
"""


async def test_a_rule_acting_on_too_many_items_is_refused(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [mail(setup, f"m{i}") for i in range(4)]
    async with setup.pipeline(MANY_ACTIONS, extra="max_actions_per_poll: 3\n") as pipe:
        await cycle(pipe)
    assert "actions refused" in caplog.text
    assert not any(setup.sim.message(i).deleted for i in ids)


async def test_a_delayed_action_waits(setup: Setup) -> None:
    mid = mail(setup)
    rules = DEFAULT_RULES.replace("then: [mark_read]", "then: [{delete: {after: 1h}}]")
    async with setup.pipeline(rules) as pipe:
        await cycle(pipe)
        assert not setup.sim.message(mid).deleted
        pipe.clock.time = lambda: time.time() + 3601  # type: ignore[method-assign]
        await pipe.flush()
    assert setup.sim.message(mid).deleted


async def test_item_content_is_never_evaluated_as_a_template(setup: Setup) -> None:
    mail(setup, "{{ 7 * 7 }} {% raw %}", text_body="{{ item.__class__ }}")
    async with setup.pipeline() as pipe:
        await cycle(pipe)
    assert setup.hook.received[0]["title"] == "{{ 7 * 7 }} {% raw %}"
    assert setup.hook.received[0]["message"] == "{{ item.__class__ }}"


async def test_a_failing_feed_rests_longer_after_each_failure(setup: Setup) -> None:
    async with setup.pipeline() as pipe:
        setup.sim.set_down(True)
        now = time.time()
        pipe.clock.time = lambda: now  # type: ignore[method-assign]
        with pytest.raises(RemoteError):
            await pipe.poll(FEED)
        asked = len(setup.sim.requests)
        with pytest.raises(RemoteError):  # the first retry comes at the next interval
            await pipe.poll(FEED)
        assert len(setup.sim.requests) == asked + 1
        assert await pipe.poll(FEED) == 0  # resting now: no request
        assert len(setup.sim.requests) == asked + 1
        setup.sim.set_down(False)
        mail(setup)
        pipe.clock.time = lambda: now + 5  # type: ignore[method-assign]
        assert await pipe.poll(FEED) == 1


async def test_a_refused_token_rests_the_feed_for_minutes(setup: Setup) -> None:
    async with setup.pipeline() as pipe:
        setup.sim.revoke_token(setup.account)
        with pytest.raises(RemoteError):
            await pipe.poll(FEED)
        asked = len(setup.sim.requests)
        pipe.clock.time = lambda: time.time() + 600  # type: ignore[method-assign]
        assert await pipe.poll(FEED) == 0
        assert len(setup.sim.requests) == asked


async def test_a_long_failure_alerts_once_and_its_end_once(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setup.pipeline(extra="alerts_to: screen\nalerts_after: 30m\n") as pipe:
        setup.sim.set_down(True)
        with pytest.raises(RemoteError):
            await cycle(pipe)
        assert "is failing" not in capsys.readouterr().out  # not for 30 minutes
        pipe.clock.time = lambda: time.time() + 3600  # type: ignore[method-assign]
        await pipe.flush()
        await pipe.flush()
        out = capsys.readouterr().out
        assert out.count("inboxbot: inbox/messages is failing") == 1
        assert "HTTP 503" in out
        setup.sim.set_down(False)
        await cycle(pipe)
        await pipe.flush()
        assert capsys.readouterr().out.count("inboxbot: inbox/messages recovered") == 1


async def test_an_auth_failure_alerts_at_once(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setup.pipeline(extra="alerts_to: screen\n") as pipe:
        setup.sim.revoke_token(setup.account)
        with pytest.raises(RemoteError):
            await cycle(pipe)
        await pipe.flush()
    out = capsys.readouterr().out
    assert "inboxbot: inbox/messages is failing" in out and "invalid_or_expired_token" in out
    assert setup.account.token not in out


NARROW_BODY_RULE = """\
- name: invoices
  when: {kind: email, subject: {contains: invoice}, text: {regex: 'total \\d+'}}
  notify: [{sink: screen, title: "{{ item.subject }}", message: "{{ item.text }}"}]
"""


async def test_no_detail_is_fetched_for_mail_a_body_rule_cannot_match(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    mail(setup, "Hello there")
    mail(setup, "Your invoice", text_body="total 42")
    async with setup.pipeline(NARROW_BODY_RULE) as pipe:
        await cycle(pipe)
    assert detail_requests(setup) == 1  # only the invoice
    assert "Your invoice\ntotal 42" in capsys.readouterr().out


MARKDOWN_RULE = """\
- name: md
  when: {kind: email}
  notify: [{sink: md, title: "{{ item.subject }}", message: "**{{ format }}:** {{ item.subject }}"}]
"""


async def test_item_content_is_escaped_for_the_sinks_format(setup: Setup) -> None:
    mail(setup, "*urgent* <b>@here</b>")
    sink = f'  md: {{type: webhook, url: "{setup.hook.url}", format: markdown}}\n'
    async with setup.pipeline(MARKDOWN_RULE, sinks=sink) as pipe:
        await cycle(pipe)
    body = setup.hook.received[0]
    assert body["title"] == "*urgent* <b>@here</b>"  # titles are plain text
    assert body["message"] == r"**markdown:** \*urgent\* \<b\>@here\</b\>"


async def test_a_sinks_rate_delays_its_notifications_and_drops_none(setup: Setup) -> None:
    ids = [mail(setup, f"mail {i}") for i in range(5)]
    sink = f'  slow: {{type: webhook, url: "{setup.hook.url}", rate: 2/s}}\n'
    rules = DEFAULT_RULES.replace("sink: hooks", "sink: slow")
    async with setup.pipeline(rules, sinks=sink) as pipe:
        await pipe.poll(FEED)
        started = time.monotonic()
        await pipe.flush()
        took = time.monotonic() - started
    assert sorted(b["item_id"] for b in setup.hook.received) == sorted(ids)
    assert took >= 1.0  # five sends at 2/s: the third waits for the first second to pass


def test_sinks_default_to_their_services_documented_rate(setup: Setup) -> None:
    slack = SINKS["slack"]
    config = slack.config_model.model_validate({"type": "slack", "url": "https://h.example/x"})
    assert sink_rate(slack("sl", config, None)) == (1, 1.0)  # type: ignore[arg-type]
    mine = config.model_copy(update={"rate": (5, 60.0)})
    assert sink_rate(slack("sl", mine, None)) == (5, 60.0)  # type: ignore[arg-type]


class CountingHook(HookReceiver):
    """The receiver, also counting how many POSTs it holds at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0

    async def _hook(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super()._hook(request)
        finally:
            self.in_flight -= 1


async def test_deliveries_to_one_sink_run_side_by_side_keeping_each_accounts_order(
    setup: Setup,
) -> None:
    hook = CountingHook()
    await hook.start()
    hook.delay = 0.02
    boxes = [setup.sim.add_account(f"box{n}@mail.td") for n in range(12)]
    for n, box in enumerate(boxes):
        box.rate_limit = 50  # as the configuration says: no account waits for its budget
        for i in range(6):
            setup.sim.add_message(box, sender="s@example.com", subject=f"{n}-{i}", text_body="b")
    accounts = "".join(
        f"  box{n}:\n    type: mailtd\n    base_url: {setup.sim.base_url}\n"
        f"    account_id: {box.address}\n    token: {box.token}\n    rate: 50\n"
        for n, box in enumerate(boxes)
    )
    (setup.tmp / "inboxbot.yaml").write_text(
        f"accounts:\n{accounts}sinks:\n  hooks: {{type: webhook, url: '{hook.url}'}}\n"
        "rules: [rules.yaml]\nbacklog: notify\n"
    )
    (setup.tmp / "rules.yaml").write_text(
        "- name: all\n  when: {kind: email}\n  notify: [{sink: hooks, title: '{{ item.subject }}', message: x}]\n"
    )
    (setup.tmp / "templates").mkdir()
    loaded = load(setup.tmp / "inboxbot.yaml")
    try:
        async with running(loaded, setup.tmp / "state.db") as pipe:
            await asyncio.gather(*(pipe.poll(feed) for feed in loaded.feeds()))
            planned = [
                (feed.split("/")[0], item)
                for feed, item in pipe.store.db.execute(
                    "SELECT feed, item_id FROM steps WHERE kind='deliver' ORDER BY seq"
                )
            ]
            await pipe.flush()
    finally:
        await hook.stop()
    assert hook.duplicates() == 0 and len(hook.received) == 72
    for account in {a for a, _ in planned}:
        arrived = [b["item_id"] for b in hook.received if b["account"] == account]
        assert arrived == [item for a, item in planned if a == account]
    assert 1 < hook.most <= IN_FLIGHT


def test_a_long_outage_does_not_push_the_next_try_past_ten_seconds() -> None:
    # after an hour of refusals the target is still tried every 5-10 s, so a target that
    # comes back gets its queue within 10 s; its own longer Retry-After still wins
    assert all(2.5 <= backoff(0, None) <= 5 for _ in range(100))
    assert all(5 <= backoff(n, None) <= 10 for n in range(1, 200) for _ in range(5))
    assert backoff(50, 120.0) == 120.0


async def test_mail_of_one_second_is_notified_in_the_order_the_list_gives(setup: Setup) -> None:
    # Mail.td lists newest first; within one second its order is the only order there is:
    # the oldest-first notifications are that list read backwards, over two pages
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for i in range(40):
        mail(setup, f"same second {i}", created_at=second)
    listed = [m.id for m in setup.sim._visible(setup.account)]
    rules = "- name: all\n  when: {kind: email}\n  notify: [{sink: hooks, title: x, message: x}]\n"
    async with setup.pipeline(rules) as pipe:
        assert await cycle(pipe) == 40
    assert [b["item_id"] for b in setup.hook.received] == listed[::-1]


def test_a_failing_upstream_is_tried_again_at_least_every_15_s() -> None:
    """Found by `make proof` (outage): at every: 1s the rest had grown to 17 min, so mail
    waited long after the upstream was back."""
    down = TransientError("503", service="inbox")
    assert [rest(n, down, 1.0) for n in (1, 2, 3)] == [0.0, 1.0, 3.0]
    assert rest(30, down, 1.0) == 15.0 and rest(30, down, 300.0) == 15.0
    assert rest(30, TransientError("429", service="inbox", retry_after=600.0), 1.0) == 600.0
    assert rest(1, AuthError("refused", service="inbox"), 1.0) == 900.0  # the user must act
