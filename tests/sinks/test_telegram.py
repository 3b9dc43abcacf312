"""The Telegram sink against the Bot API simulator, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.errors import AuthError, PermanentError, TransientError
from bot.sim.telegram import TelegramSim, parse
from bot.sinks.base import Notification
from bot.sinks.telegram import LIMIT, TelegramConfig, TelegramSink, split_message
from tests.conftest import Setup
from tests.sinks.shared import digest_of_200, rendered, through_an_outage
from tests.test_pipeline import mail

CHAT = "123456789"
INJECTION = (
    "*bold* _x_ <b>x</b> @here @all [link](http://evil) `code` a.b! 1+1=2 #tag {x} |y| ~z~ \\"
)


@pytest.fixture
async def tg() -> AsyncIterator[TelegramSim]:
    async with TelegramSim() as simulator:
        yield simulator


@pytest.fixture
def token(tg: TelegramSim) -> str:
    tg.add_chat(CHAT)
    return tg.add_bot()


def make_sink(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str, **keys: Any
) -> TelegramSink:
    config = TelegramConfig(
        type="telegram",
        token=token,
        chat_id=keys.pop("chat_id", CHAT),
        base_url=tg.base_url,
        **keys,
    )
    return TelegramSink("tg", config, session)


def note(sink: TelegramSink, content: str = "hello", **kwargs: Any) -> Notification:
    return rendered(sink, "From: ", content, **kwargs)


async def test_a_message_is_sent_as_the_bot_api_documents(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(tg, session, token)
    await sink.send(note(sink, "bob & alice", url="https://x.example/m?a=1&b=2"))
    (msg,) = tg.messages
    assert msg.payload == {
        "chat_id": CHAT,
        "text": "<b>New mail</b>\nFrom: bob &amp; alice\nhttps://x.example/m?a=1&amp;b=2",
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
        "disable_web_page_preview": True,
    }
    assert msg.text == "New mail\nFrom: bob & alice\nhttps://x.example/m?a=1&b=2"
    assert msg.formatting() == [("bold", "New mail")]


@pytest.mark.parametrize(
    ("priority", "options", "silent"),
    [("min", {}, True), ("low", {}, True), ("default", {}, False), ("urgent", {}, False),
     ("high", {"silent": True}, True)],
)  # fmt: skip
async def test_low_priorities_and_the_silent_option_send_without_sound(
    tg: TelegramSim,
    session: aiohttp.ClientSession,
    token: str,
    priority: str,
    options: dict[str, Any],
    silent: bool,
) -> None:
    sink = make_sink(tg, session, token)
    await sink.send(note(sink, priority=priority, options=options))
    assert tg.messages[0].payload.get("disable_notification", False) is silent


@pytest.mark.parametrize("fmt", ["html", "markdown", "text"])
async def test_markup_in_item_content_stays_text(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str, fmt: str
) -> None:
    sink = make_sink(tg, session, token, format=fmt)
    await sink.send(note(sink, INJECTION, title="*Re:* <i>x</i> _y_"))
    (msg,) = tg.messages
    assert msg.text == f"*Re:* <i>x</i> _y_\nFrom: {INJECTION}"
    bold_title = [("bold", "*Re:* <i>x</i> _y_")]
    assert msg.formatting() == ([] if fmt == "text" else bold_title)
    assert ("parse_mode" in msg.payload) is (fmt != "text")


@pytest.mark.parametrize("fmt", ["html", "markdown", "text"])
async def test_a_long_message_is_split_on_lines_and_keeps_its_formatting(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str, fmt: str
) -> None:
    sink = make_sink(tg, session, token, format=fmt)
    lines = [f"line {i:04d}: {sink.escape('a.b <c> & d_e')}" for i in range(400)]
    opening, closing = {"html": ("<i>", "</i>"), "markdown": ("_", "_"), "text": ("", "")}[fmt]
    await sink.send(note(sink, message=opening + "\n".join(lines) + closing))
    assert len(tg.messages) > 2
    assert all(len(m.payload["text"].encode("utf-16-le")) // 2 <= LIMIT for m in tg.messages)
    shown = "\n".join(m.text for m in tg.messages)
    expected = "\n".join(line.replace("\\", "") for line in lines)
    plain = (
        expected if fmt == "markdown" else parse(expected, "HTML" if fmt == "html" else None).text()
    )
    assert shown == "New mail\n" + plain
    if fmt != "text":  # the italic run is closed at each cut and opened again after
        assert all(m.formatting()[-1][0] == "italic" for m in tg.messages)


async def test_a_single_huge_line_is_cut_between_escapes(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(tg, session, token, format="markdown")
    await sink.send(note(sink, "x." * 5000))  # 15,000 characters once escaped
    assert len(tg.messages) == 4
    assert "".join(m.text for m in tg.messages) == "New mail\nFrom: " + "x." * 5000


async def test_truncate_sends_one_message_ending_in_an_ellipsis(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(tg, session, token, long_messages="truncate")
    await sink.send(note(sink, message="<b>" + "word & " * 2000 + "</b>"))
    (msg,) = tg.messages
    assert msg.text.endswith("…") and len(msg.text) <= LIMIT
    assert msg.formatting()[1][0] == "bold"


def test_markdown_cuts_never_leave_ambiguous_underscores() -> None:
    text = "___" + "x " * 3000 + "_\r__"  # underline and italic, written as the Bot API says
    assert parse(text, "MarkdownV2").entities[0]["type"] == "italic"
    pieces = split_message(text, "markdown", 1000)
    assert len(pieces) == 7
    for piece in pieces:
        parsed = parse(piece, "MarkdownV2")
        assert {e["type"] for e in parsed.entities} == {"italic", "underline"}


async def test_a_retry_after_a_flood_wait_sends_only_the_parts_left(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    tg.clock = lambda: 1000.0
    sink = make_sink(tg, session, token)
    for i in range(18):
        await sink.send(note(sink, id=f"n{i}"))
    lines = [f"line {i}" for i in range(1500)]
    long = note(sink, id="long", message="\n".join(lines))
    with pytest.raises(TransientError) as err:
        await sink.send(long)  # parts 1 and 2 fill the chat's 20 a minute; part 3 waits
    assert err.value.retry_after == 60 and sink.sent_parts == {"long": 2}
    tg.clock = lambda: 1060.0
    await sink.send(long)
    assert "\n".join(m.text for m in tg.messages[18:]) == "\n".join(["New mail", *lines])
    assert len(tg.messages) == 18 + 4 and sink.sent_parts == {}


async def test_telegram_s_retry_hint_is_taken_from_the_body(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    tg.inject("rate_limited", retry_after=7)
    sink = make_sink(tg, session, token)
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink))
    assert err.value.retry_after == 7 and err.value.status == 429


async def test_flood_control_answers_429_with_the_wait_in_the_body(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    clock = [1000.0]
    tg.clock = lambda: clock[0]
    sink = make_sink(tg, session, token)
    for i in range(20):
        clock[0] += 1
        await sink.send(note(sink, id=f"n{i}"))
    with pytest.raises(TransientError) as err:
        await sink.send(note(sink, id="late"))
    assert err.value.retry_after == 41 and err.value.status == 429  # the first ages out at 1061
    clock[0] += 41
    await sink.send(note(sink, id="late"))
    assert len(tg.messages) == 21


@pytest.mark.parametrize("bad", ["wrong", "malformed"])
async def test_a_refused_token_is_an_auth_error_without_the_token(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str, bad: str
) -> None:
    other = "123456:" + "A" * 35 if bad == "wrong" else "not-a-token"
    sink = make_sink(tg, session, other)
    with pytest.raises(AuthError) as err:
        await sink.send(note(sink))
    assert str(err.value).startswith("tg: ") and "token" in str(err.value)
    assert other not in str(err.value) and "A" * 10 not in str(err.value)


async def test_a_blocked_bot_waits_for_the_user(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    tg.chats[CHAT].blocked = True
    sink = make_sink(tg, session, token)
    with pytest.raises(AuthError, match=r"blocked by the user.*unblock"):
        await sink.send(note(sink))


async def test_chat_problems_are_permanent(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    tg.add_chat("-4001", "group")
    tg.migrate("-4001", "-1004001")
    unknown, upgraded = (make_sink(tg, session, token, chat_id=c) for c in ("42", -4001))
    with pytest.raises(PermanentError, match="chat not found"):
        await unknown.send(note(unknown))
    with pytest.raises(PermanentError, match='set chat_id: "-1004001"'):
        await upgraded.send(note(upgraded))
    assert tg.messages == []


async def test_unescaped_markdown_in_a_template_is_refused_like_telegram_does(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(tg, session, token, format="markdown")
    with pytest.raises(PermanentError, match=r"Character '\.' is reserved"):
        await sink.send(note(sink, message="Done."))
    assert sink.sent_parts == {}


@pytest.mark.parametrize(
    ("mode", "text", "error"),
    [("HTML", "<b>x", 'end tag corresponding to start tag "b"'),
     ("HTML", "<b>x</i>", "Unmatched end tag"),
     ("HTML", "<br>", 'Unsupported start tag "br"'),
     ("HTML", "a < b", "byte offset 2"),
     ("MarkdownV2", "*x", "end of Bold entity"),
     ("MarkdownV2", "a-b", "Character '-' is reserved"),
     (None, "x" * 4097, "message is too long")],
)  # fmt: skip
async def test_the_simulator_refuses_what_telegram_refuses(
    tg: TelegramSim,
    session: aiohttp.ClientSession,
    token: str,
    mode: str | None,
    text: str,
    error: str,
) -> None:
    body = {"chat_id": CHAT, "text": text, **({"parse_mode": mode} if mode else {})}
    async with session.post(f"{tg.base_url}/bot{token}/sendMessage", json=body) as resp:
        answer = await resp.json()
    assert resp.status == 400 and answer["ok"] is False and answer["error_code"] == 400
    assert error in answer["description"] and answer["description"].startswith("Bad Request: ")


RULE = """\
- name: to-telegram
  when: {kind: email}
  notify: [{sink: tg, template: email}]
"""


async def test_an_outage_keeps_the_notification_until_telegram_is_back(
    setup: Setup, tg: TelegramSim, token: str
) -> None:
    mail(setup, "during the outage")
    # rate: the service's default rate would make the retries wait in real time
    sink = f'  tg: {{type: telegram, token: "{token}", chat_id: "{CHAT}", base_url: "{tg.base_url}", rate: 100/s}}\n'
    async with setup.pipeline(RULE, sinks=sink) as pipe:
        await through_an_outage(pipe, tg.set_down)
    assert [m.text.splitlines()[0] for m in tg.messages] == ["during the outage"]
    assert [r.status for r in tg.requests] == [503] * 6 + [200]


async def test_a_200_item_digest_is_split_within_the_limit(
    tg: TelegramSim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(tg, session, token)
    await sink.send(digest_of_200(sink))
    assert len(tg.messages) > 1
    assert all(len(m.payload["text"].encode("utf-16-le")) // 2 <= LIMIT for m in tg.messages)
    assert "Newsletter 199" in tg.messages[-1].payload["text"]
