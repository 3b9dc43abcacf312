"""The rocketchat sink against the Rocket.Chat simulator (bot/sim/rocketchat.py) over HTTP:
the posts read back, escaping, the size limit, the rate limit, errors, an outage."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from bot.errors import AuthError, PermanentError, TransientError
from bot.sim.rocketchat import RocketChatSim, SimUser
from bot.sinks.base import Notification
from bot.sinks.rocketchat import (
    RocketChatConfig,
    RocketChatSink,
    escape_rocketchat,
    reset_delay,
    units,
)
from tests.conftest import Setup
from tests.sinks.shared import deliver_round, digest_of_200

T0 = 1_700_000_000.0
TOKEN = "pat-5ecret-Tok3n-do-not-show"
INJECTION = "*bold* _x_ <b>x</b> @here @all [link](http://evil) `code`"
ESCAPED = "∗bold∗ ˍxˍ <b>x</b> @\u200bhere @\u200ball [link]\u200b(http://evil) ˋcodeˋ"
# What Rocket.Chat's server takes for a mention (MentionsParser: ``(^|\s|>)@name``).
MENTION = re.compile(r"(^|\s|>)@([0-9a-zA-Z-_.]+)")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def rc(clock: Clock) -> AsyncIterator[RocketChatSim]:
    async with RocketChatSim(clock=clock) as simulator:  # the server's default rate limit
        yield simulator


@pytest.fixture
def bot(rc: RocketChatSim) -> SimUser:
    return rc.add_user("inboxbot", "Inbox Bot", token=TOKEN)


@pytest.fixture
def alice(rc: RocketChatSim) -> SimUser:
    return rc.add_user("alice", "Alice Liddell")


def make_sink(session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser,
              channel: str = "@alice", **keys: Any) -> RocketChatSink:  # fmt: skip
    config = RocketChatConfig.model_validate(
        {"type": "rocketchat", "base_url": rc.base_url, "user_id": bot.id, "token": bot.token,
         "channel": channel, "timeout": "5s", **keys}
    )  # fmt: skip
    return RocketChatSink("rc", config, session)


def note(nid: str = "n1", title: str = "Hello", message: str = "", **fields: Any) -> Notification:
    fields.setdefault("priority", "default")
    fields.setdefault("url", None)
    return Notification(id=nid, rule="r", account="inbox", feed="messages", kind="email",
                        item_id="i1", title=title, message=message, **fields)  # fmt: skip


def texts(rc: RocketChatSim, *members: SimUser) -> list[tuple[str, str]]:
    """(sender, text) of the DM's messages, oldest first."""
    room = rc.direct(*members)
    return [(m.user.username, m.text) for m in rc.messages.values() if m.room is room]


async def test_a_direct_message_is_read_back_exactly(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    sink = make_sink(session, rc, bot)
    url = "https://mail.example/m/1?a=1&b=_2_"
    n = note(title="Invoice <1> & *co*", message=f"From bob:\n{sink.escape(INJECTION)}", url=url,
             priority="high")  # fmt: skip
    await sink.send(n)
    text = f":warning: *Invoice <1> & ∗co∗*\nFrom bob:\n{ESCAPED}\n{url}"
    assert rc.posted == [{"channel": "@alice", "text": text, "parseUrls": False}]
    assert texts(rc, bot, alice) == [("inboxbot", text)]
    (request,) = rc.requests_to("chat.postMessage")
    assert request.caller == bot.id and request.status == 200


async def test_a_channel_post(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    general = rc.channel("general", bot, alice)
    await make_sink(session, rc, bot, "#general").send(note(title="", message="just this"))
    assert [m.text for m in rc.messages.values() if m.room is general] == ["just this"]


def test_content_can_neither_format_nor_mention() -> None:
    escaped = escape_rocketchat(INJECTION)
    assert escaped == ESCAPED and not MENTION.search(escaped)
    assert not set("*_~`|") & set(escaped) and "](" not in escaped
    cases = {
        "@alice, ask @all (@here)": "@\u200balice, ask @\u200ball (@\u200bhere)",
        "issue #42 in C# by bob@example.org": "issue #\u200b42 in C# by bob@example.org",
        "> quoted\n- listed\n12. numbered": "\u200b> quoted\n\u200b- listed\n\u200b12. numbered",
        "||spoiler|| <t:1630360800> \\(x^2\\) ~~gone~~": "ǀǀspoilerǀǀ <\u200bt:1630360800> "
        "\\\u200b(x^2\\\u200b) ∼∼gone∼∼",
        # links and addresses stay whole, so they still work; the punctuation after them,
        # which the parser leaves outside, is escaped like any other text
        "see https://x.example/a_b*c_/?q=~1 or (mail_me@x.example)*": "see "
        "https://x.example/a_b*c_/?q=~1 or (mail_me@x.example)∗",
    }  # fmt: skip
    assert {k: escape_rocketchat(k) for k in cases} == cases


async def test_text_format_escapes_the_whole_message(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    sink = make_sink(session, rc, bot, format="text")
    assert sink.escape(INJECTION) == INJECTION  # the renderer leaves it to the sending
    await sink.send(note(title="@all *t*", message=f"> not a quote\n{INJECTION}"))
    text = f"*@\u200ball ∗t∗*\n\u200b> not a quote\n{ESCAPED}"
    assert texts(rc, bot, alice) == [("inboxbot", text)]


async def test_an_overlong_message_is_cut_to_the_servers_limit(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    url = "https://mail.example/m/1"
    long = "🚀 emoji count twice " * 1000  # 20,000 characters, 21,000 JavaScript units
    await make_sink(session, rc, bot).send(note(message=long, url=url))
    ((_, text),) = texts(rc, bot, alice)
    assert 4990 <= units(text) <= 5000 and text.endswith(f"…\n{url}")
    assert text.startswith("*Hello*\n🚀 emoji count twice")
    with pytest.raises(PermanentError, match="error-message-size-exceeded"):
        await make_sink(session, rc, bot, max_length=6000).send(note(message=long))


async def test_429_waits_until_the_window_resets(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser, clock: Clock
) -> None:
    sink = make_sink(session, rc, bot)
    sink.clock = clock
    for i in range(10):  # the server's default: 10 calls per minute per route
        await sink.send(note(f"n{i}"))
    clock.now += 15
    with pytest.raises(TransientError, match="HTTP 429") as caught:
        await sink.send(note("n10"))
    assert caught.value.retry_after == 45.0  # X-RateLimit-Reset is epoch milliseconds
    assert len(rc.posted) == 10 and RocketChatSink.default_rate == "10/min"
    clock.now += 45
    await sink.send(note("n10"))
    assert len(rc.posted) == 11


async def test_429_without_the_header_reads_the_wait_from_the_body(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser
) -> None:
    wait = "Error, too many requests. Please slow down. You must wait 7 seconds before trying"
    rc.inject("status", status=429, error=f"{wait} this endpoint again.")
    with pytest.raises(TransientError) as caught:
        await make_sink(session, rc, bot).send(note())
    assert caught.value.retry_after == 7.0


def test_the_reset_may_come_in_milliseconds_seconds_or_as_a_delay() -> None:
    assert reset_delay(T0 * 1000 + 30_000, T0) == 30.0
    assert reset_delay(T0 + 30, T0) == 30.0
    assert reset_delay(30, T0) == 30.0
    assert reset_delay(T0 * 1000 - 5000, T0) == 0.0


async def test_a_wrong_token_is_an_auth_error_without_the_token(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    rc.revoke(bot)
    with pytest.raises(AuthError) as caught:
        await make_sink(session, rc, bot).send(note())
    message = str(caught.value)
    assert message.startswith("rc: ") and "check user_id and token" in message
    assert TOKEN not in message and bot.id not in message


@pytest.mark.parametrize("channel", ["@nobody", "#nowhere"])
async def test_an_unknown_user_or_channel_is_permanent(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, channel: str
) -> None:
    with pytest.raises(PermanentError, match=f"no channel or user {channel}"):
        await make_sink(session, rc, bot, channel).send(note())


async def test_server_failures_are_transient(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    sink = make_sink(session, rc, bot)
    rc.inject("status", status=500)
    with pytest.raises(TransientError, match="HTTP 500"):
        await sink.send(note())
    rc.set_down(True)
    with pytest.raises(TransientError, match="HTTP 503"):
        await sink.send(note())
    assert rc.posted == []


def test_the_config() -> None:
    base = {"type": "rocketchat", "base_url": "https://chat.example.org", "user_id": "u",
            "token": "t"}  # fmt: skip
    config = RocketChatConfig.model_validate({**base, "channel": "#general"})
    assert (config.format, config.max_length) == ("markdown", 5000)
    with pytest.raises(ValidationError, match="channel"):
        RocketChatConfig.model_validate({**base, "channel": "general"})
    with pytest.raises(ValidationError, match="server's address"):
        RocketChatConfig.model_validate({**base, "channel": "@a", "base_url": "chat.example.org"})


# --- the pipeline: an outage longer than the retry schedule ---------------------------

TO_ROCKETCHAT = """\
- name: to-chat
  when: {kind: email}
  notify: [{sink: rc, template: email}]
"""


async def test_an_outage_keeps_the_notification_until_the_server_is_back(
    setup: Setup, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    sinks = (f'  rc: {{type: rocketchat, base_url: "{rc.base_url}", user_id: "{bot.id}", '
             f'token: "{bot.token}", channel: "@alice", timeout: 5s}}\n')  # fmt: skip
    setup.sim.add_message(setup.account, sender="bob@example.com", subject="Outage *now*",
                          text_body="Body of @all")  # fmt: skip
    rc.set_down(True)
    async with setup.pipeline(TO_ROCKETCHAT, sinks=sinks) as pipe:
        for hours in range(1, 6):
            await deliver_round(pipe, hours)
            assert pipe.store.outbox_depth() == 1 and rc.posted == []
        (step,) = pipe.store.pending_steps("deliver")
        assert step.attempts >= 5
        rc.set_down(False)
        await deliver_round(pipe, 6)
        await deliver_round(pipe, 7)
        assert pipe.store.outbox_depth() == 0
    assert texts(rc, bot, alice) == [("inboxbot", "*Outage ∗now∗*\nBody of @\u200ball")]


async def test_a_200_item_digest_is_taken_within_the_server_limit(
    session: aiohttp.ClientSession, rc: RocketChatSim, bot: SimUser, alice: SimUser
) -> None:
    sink = make_sink(session, rc, bot)
    await sink.send(digest_of_200(sink))
    (text,) = [m.text for m in rc.messages.values()]
    assert len(text) <= 5000 and "Newsletter 0" in text
