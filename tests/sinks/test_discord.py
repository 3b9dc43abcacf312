"""The Discord sink against the webhook simulator, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.errors import AuthError, PermanentError, TransientError
from bot.sim.discord import DiscordSim, SimWebhook, pings
from bot.sinks.base import Notification
from bot.sinks.discord import ZWSP, DiscordConfig, DiscordSink
from tests.conftest import Setup
from tests.sinks.shared import digest_of_200, rendered, through_an_outage
from tests.test_pipeline import mail

INJECTION = "*bold* _x_ <b>x</b> @here @everyone @all <@123> <@&456> [link](http://evil) `code` ~~s~~ ||sp|| # h"


@pytest.fixture
async def dc() -> AsyncIterator[DiscordSim]:
    async with DiscordSim() as simulator:
        yield simulator


@pytest.fixture
def webhook(dc: DiscordSim) -> SimWebhook:
    return dc.add_webhook("alerts")


def make_sink(dc: DiscordSim, session: aiohttp.ClientSession, url: str, **keys: Any) -> DiscordSink:
    return DiscordSink("dc", DiscordConfig(type="discord", url=url, **keys), session)


def note(sink: DiscordSink, content: str = "bob", **kwargs: Any) -> Notification:
    return rendered(sink, "**From:** ", content, **kwargs)


async def test_a_message_is_posted_as_content_without_pings_or_previews(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    await sink.send(note(sink, url="https://x.example/m?a=1"))
    (msg,) = dc.messages
    assert msg.payload == {
        "content": "**New mail**\n**From:** bob\n<https://x.example/m?a=1>",
        "allowed_mentions": {"parse": []},
        "flags": 4,  # SUPPRESS_EMBEDS: no link preview
    }
    assert msg.channel == "alerts"
    (request,) = dc.requests
    assert request.query == "wait=true" and request.status == 200


async def test_the_embed_option_sends_an_embed_coloured_by_priority(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    await sink.send(note(sink, "a_b", url="https://x.example/m", priority="urgent",
                         options={"embed": True}))  # fmt: skip
    (msg,) = dc.messages
    assert msg.payload == {
        "embeds": [{"color": 0xED4245, "title": "New mail", "description": r"**From:** a\_b",
                    "url": "https://x.example/m"}],
        "allowed_mentions": {"parse": []},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("priority", "options", "flags"),
    [("min", {}, 4096 | 4), ("low", {}, 4096 | 4), ("default", {}, 4), ("high", {"silent": True}, 4096 | 4),
     ("low", {"embed": True}, 4096), ("urgent", {"embed": True}, None)],
)  # fmt: skip
async def test_low_priorities_are_silent_messages(
    dc: DiscordSim,
    session: aiohttp.ClientSession,
    webhook: SimWebhook,
    priority: str,
    options: dict[str, Any],
    flags: int | None,
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    await sink.send(note(sink, priority=priority, options=options))
    assert dc.messages[0].payload.get("flags") == flags


@pytest.mark.parametrize("fmt", ["markdown", "text"])
async def test_markup_and_mentions_in_item_content_stay_text(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook, fmt: str
) -> None:
    sink = make_sink(dc, session, dc.url(webhook), format=fmt)
    template = "**From:** " if fmt == "markdown" else "From: "
    await sink.send(
        note(sink, INJECTION, title="@here *now*", message=template + sink.escape(INJECTION))
    )
    (msg,) = dc.messages
    shown = (
        r"\*bold\* \_x\_ \<b\>x\</b\> @\u200bhere @\u200beveryone @\u200ball \<@\u200b123\> "
        r"\<@\u200b&456\> \[link\]\(http://evil\) \`code\` \~\~s\~\~ \|\|sp\|\| \# h"
    ).replace(r"\u200b", ZWSP)
    title = rf"**@{ZWSP}here \*now\***"
    assert msg.content == f"{title}\n{'**From:** ' if fmt == 'markdown' else 'From: '}{shown}"
    assert msg.pings == [] and pings(msg.content, None) == []  # not even without allowed_mentions
    assert "@everyone" not in msg.content and "<@123>" not in msg.content


async def test_an_over_long_message_is_cut_to_discord_s_limits(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    await sink.send(note(sink, "a.b " * 2000, url="https://x.example/m"))
    await sink.send(note(sink, "a.b " * 2000, options={"embed": True}, title="T" * 300))
    content, embed = dc.messages[0].content, dc.messages[1].embeds[0]
    assert len(content) == 2000 and content.endswith("…\n<https://x.example/m>")
    assert len(embed["description"]) == 4096 and len(embed["title"]) == 256
    assert not content.split("…")[0].endswith("\\")


async def test_the_simulator_refuses_content_over_2000_characters(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    async with session.post(dc.url(webhook), json={"content": "x" * 2001}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"content": ["Must be 2000 or fewer in length."]}


async def test_a_refused_message_is_a_permanent_error_with_discord_s_reason(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    with pytest.raises(PermanentError, match="Cannot send an empty message"):
        await sink.send(note(sink, title="", message=""))


async def test_429_retry_after_comes_from_the_body(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    dc.inject("rate_limited", retry_after=1.5)
    sink = make_sink(dc, session, dc.url(webhook))
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink))
    assert err.value.retry_after == 1.5 and err.value.status == 429


async def test_the_webhook_bucket_allows_five_per_two_seconds(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    now = [100.0]
    dc.clock = lambda: now[0]
    sink = make_sink(dc, session, dc.url(webhook))
    for _ in range(5):
        await sink.send(note(sink))
        now[0] += 0.1
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink))
    assert err.value.retry_after == pytest.approx(1.5)
    limited = dc.requests[-1]
    assert limited.status == 429
    now[0] = 102.0  # the first request ages out
    await sink.send(note(sink))
    assert len(dc.messages) == 6


@pytest.mark.parametrize("case", ["wrong token", "deleted webhook"])
async def test_a_refused_webhook_is_an_auth_error_without_the_url(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook, case: str
) -> None:
    url = (
        dc.url(webhook).replace(webhook.token, "x" * 68)
        if case == "wrong token"
        else dc.url(webhook)
    )
    if case == "deleted webhook":
        del dc.webhooks[webhook.id]
    sink = make_sink(dc, session, url)
    with pytest.raises(AuthError) as err:
        await sink.send(note(sink))
    message = str(err.value)
    assert message.startswith("dc: ") and "set url" in message
    assert ("Unknown Webhook" if case == "deleted webhook" else "Invalid Webhook Token") in message
    assert webhook.token not in message and webhook.id not in message and "x" * 10 not in message


RULE = """\
- name: to-discord
  when: {kind: email}
  notify: [{sink: dc, template: email}]
"""


async def test_an_outage_keeps_the_notification_until_discord_is_back(
    setup: Setup, dc: DiscordSim, webhook: SimWebhook
) -> None:
    mail(setup, "during the outage")
    # rate: the service's default rate would make the retries wait in real time
    sink = f'  dc: {{type: discord, url: "{dc.url(webhook)}", rate: 100/s}}\n'
    async with setup.pipeline(RULE, sinks=sink) as pipe:
        await through_an_outage(pipe, dc.set_down)
    assert [m.content.splitlines()[0] for m in dc.messages] == ["**during the outage**"]
    assert [r.status for r in dc.requests] == [503] * 6 + [200]


async def test_a_200_item_digest_is_cut_to_2000_characters(
    dc: DiscordSim, session: aiohttp.ClientSession, webhook: SimWebhook
) -> None:
    sink = make_sink(dc, session, dc.url(webhook))
    await sink.send(digest_of_200(sink))
    (msg,) = dc.messages
    assert len(msg.content) <= 2000 and msg.pings == []
