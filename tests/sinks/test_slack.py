"""The Slack sink against the incoming-webhook simulator, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.errors import AuthError, PermanentError, TransientError
from bot.sim.slack import SimWebhook, SlackSim, formatted
from bot.sinks.base import Notification
from bot.sinks.slack import ZWSP, SlackConfig, SlackSink
from tests.conftest import Setup
from tests.sinks.shared import digest_of_200, rendered, through_an_outage
from tests.test_pipeline import mail

INJECTION = "*bold* _x_ <b>x</b> @here @all <!here> <@U123> <http://evil|link> [link](http://evil) `code` ~s~ a & b"


@pytest.fixture
async def sl() -> AsyncIterator[SlackSim]:
    async with SlackSim() as simulator:
        yield simulator


@pytest.fixture
def webhook(sl: SlackSim) -> SimWebhook:
    return sl.add_webhook("#alerts")


def make_sink(session: aiohttp.ClientSession, url: str, **keys: Any) -> SlackSink:
    return SlackSink("sl", SlackConfig(type="slack", url=url, **keys), session)


def note(sink: SlackSink, content: str = "bob", **kwargs: Any) -> Notification:
    return rendered(sink, "_From:_ ", content, **kwargs)


async def test_a_message_is_posted_as_mrkdwn_without_unfurling(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook))
    await sink.send(note(sink, url="https://x.example/m?a=1&b=2"))
    (msg,) = sl.messages
    assert msg.payload == {
        "text": "*New mail*\n_From:_ bob\n<https://x.example/m?a=1&amp;b=2>",
        "mrkdwn": True,
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert msg.channel == "#alerts" and msg.links == ["https://x.example/m?a=1&amp;b=2"]
    assert formatted(msg.text) == [("*", "New mail"), ("_", "From:")]


@pytest.mark.parametrize(
    ("priority", "first_line"),
    [("min", "*New mail*"), ("default", "*New mail*"), ("high", "*:warning: New mail*"),
     ("urgent", "*:rotating_light: New mail*")],
)  # fmt: skip
async def test_high_priorities_are_marked_with_an_emoji(
    sl: SlackSim,
    session: aiohttp.ClientSession,
    webhook: SimWebhook,
    priority: str,
    first_line: str,
) -> None:
    sink = make_sink(session, sl.url(webhook))
    await sink.send(note(sink, priority=priority))
    assert sl.messages[0].text.splitlines()[0] == first_line


async def test_markup_mentions_and_links_in_item_content_stay_text(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook))
    await sink.send(note(sink, INJECTION, title="*Re:* <!channel> _now_"))
    (msg,) = sl.messages
    z = ZWSP
    assert msg.text == (
        f"*{z}*{z}Re:{z}*{z} &lt;!channel&gt; {z}_{z}now{z}_{z}*\n_From:_ "
        f"{z}*{z}bold{z}*{z} {z}_{z}x{z}_{z} &lt;b&gt;x&lt;/b&gt; @here @all &lt;!here&gt; "
        f"&lt;@U123&gt; &lt;http://evil|link&gt; [link](http://evil) {z}`{z}code{z}`{z} "
        f"{z}~{z}s{z}~{z} a &amp; b"
    )
    assert msg.pings == [] and msg.links == []
    assert formatted(msg.text) == [("*", msg.text.splitlines()[0][1:-1]), ("_", "From:")]
    assert "link_names" not in msg.payload


async def test_the_text_format_sends_plain_text_with_control_characters_escaped(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook), format="text")
    await sink.send(note(sink, INJECTION, message=f"From: {INJECTION}"))
    (msg,) = sl.messages
    assert msg.payload["mrkdwn"] is False
    assert msg.text.startswith("New mail\nFrom: *bold* _x_ &lt;b&gt;x&lt;/b&gt; @here")
    assert msg.pings == [] and msg.links == []


async def test_an_over_long_message_is_kept_under_the_configured_limit(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook))
    await sink.send(note(sink, "a&b " * 2000, url="https://x.example/m"))
    text = sl.messages[0].text
    assert len(text) == 4000 and text.endswith("…\n<https://x.example/m>")
    assert "&…" not in text and "&a…" not in text and "&am…" not in text
    big = make_sink(session, sl.url(webhook), max_length=40_000)
    await big.send(note(big, "x" * 50_000))
    assert len(sl.messages[1].text) == 40_000 and not sl.messages[1].truncated


async def test_the_simulator_truncates_like_slack(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    async with session.post(sl.url(webhook), json={"text": "x" * 40_001}) as resp:
        assert resp.status == 200 and await resp.text() == "ok"
    assert len(sl.messages[0].text) == 40_000 and sl.messages[0].truncated


async def test_429_honours_retry_after(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sl.clock = lambda: 50.0
    webhook.refilled = 50.0
    sink = make_sink(session, sl.url(webhook))
    for i in range(3):  # the burst
        await sink.send(note(sink, id=f"n{i}"))
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink, id="n3"))
    assert err.value.retry_after == 1 and err.value.status == 429
    sl.inject("rate_limited", retry_after=30)
    sl.clock = lambda: 60.0
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink, id="n3"))
    assert err.value.retry_after == 30


@pytest.mark.parametrize(
    ("state", "error", "code"),
    [("wrong secret", AuthError, "invalid_token"), ("revoked", AuthError, "no_service"),
     ("restricted", AuthError, "action_prohibited"),
     ("channel_deleted", PermanentError, "channel_not_found"),
     ("archived", PermanentError, "channel_is_archived")],
)  # fmt: skip
async def test_slack_s_refusals_are_classified_without_the_url(
    sl: SlackSim,
    session: aiohttp.ClientSession,
    webhook: SimWebhook,
    state: str,
    error: type[Exception],
    code: str,
) -> None:
    url = sl.url(webhook)
    if state == "wrong secret":
        url = url.replace(webhook.secret, "0" * 24)
    else:
        webhook.state = state
    sink = make_sink(session, url)
    with pytest.raises(error) as err:
        await sink.send(note(sink))
    message = str(err.value)
    assert message.startswith("sl: ") and f"({code})" in message
    assert webhook.secret not in message and webhook.bot not in message and "0" * 10 not in message


async def test_an_empty_notification_is_refused_for_good(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook))
    with pytest.raises(PermanentError, match="no_text"):
        await sink.send(note(sink, title="", message=""))


RULE = """\
- name: to-slack
  when: {kind: email}
  notify: [{sink: sl, template: email}]
"""


async def test_an_outage_keeps_the_notification_until_slack_is_back(
    setup: Setup, sl: SlackSim, webhook: SimWebhook
) -> None:
    mail(setup, "during the outage")
    # rate: the service's default rate would make the retries wait in real time
    sink = f'  sl: {{type: slack, url: "{sl.url(webhook)}", rate: 100/s}}\n'
    async with setup.pipeline(RULE, sinks=sink) as pipe:
        await through_an_outage(pipe, sl.set_down)
    assert [m.text.splitlines()[0] for m in sl.messages] == ["*during the outage*"]
    assert [r.status for r in sl.requests] == [503] * 6 + [200]


async def test_a_200_item_digest_is_taken_within_the_limit(
    sl: SlackSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(session, sl.url(webhook))
    await sink.send(digest_of_200(sink))
    (msg,) = sl.messages
    assert "Newsletter 0" in msg.text and msg.pings == [] and len(msg.text) <= 40000
