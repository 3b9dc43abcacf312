"""The ntfy sink against the ntfy simulator, over HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from bot.errors import AuthError, PermanentError, QuotaError, TransientError
from bot.sim.ntfy import NtfySim
from bot.sinks.base import Notification
from bot.sinks.ntfy import JSON_LIMIT, MESSAGE_LIMIT, NtfyConfig, NtfySink
from tests.conftest import Setup
from tests.sinks.shared import digest_of_200, rendered, through_an_outage
from tests.test_pipeline import mail

TOPIC = "alice-inbox"
PASSWORD = "correct horse battery staple"
INJECTION = "*bold* _x_ <b>x</b> @here @all [link](http://evil) `code` # h | t ~s~ \\"
MARKDOWN_SPECIALS = set("\\`*_{}[]()#+-.!|<>~")


@pytest.fixture
async def ntfy() -> AsyncIterator[NtfySim]:
    async with NtfySim(default_access="deny-all") as simulator:
        simulator.add_user("alice", PASSWORD)
        simulator.allow("alice", TOPIC, "read-write")
        yield simulator


@pytest.fixture
def token(ntfy: NtfySim) -> str:
    return ntfy.add_token("alice")


def make_sink(ntfy: NtfySim, session: aiohttp.ClientSession, **keys: Any) -> NtfySink:
    url = keys.pop("url", f"{ntfy.base_url}/{TOPIC}")
    return NtfySink("phone", NtfyConfig(type="ntfy", url=url, **keys), session)


def note(sink: NtfySink, content: str = "bob@example.com", **kwargs: Any) -> Notification:
    return rendered(
        sink, "**From:** " if sink.format == "markdown" else "From: ", content, **kwargs
    )


def unescaped(text: str) -> list[str]:
    """The Markdown specials of ``text`` that no backslash makes literal."""
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in MARKDOWN_SPECIALS:
            i += 2
            continue
        if text[i] in MARKDOWN_SPECIALS:
            found.append(text[i])
        i += 1
    return found


async def test_a_notification_is_published_as_ntfy_documents(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(ntfy, session, token=token, format="markdown")
    actions = [{"action": "view", "label": "Open", "url": "https://mail.example/m1"},
               {"action": "http", "label": "Mark read", "url": "https://hooks.example/read",
                "method": "put", "headers": {"X-Key": "k"}, "clear": True}]  # fmt: skip
    options = {"tags": ["email", "warning"], "icon": "https://mail.example/i.png",
               "actions": actions}  # fmt: skip
    await sink.send(note(sink, url="https://mail.example/m1", priority="high", options=options))
    ((request,), (published,)) = ntfy.requests, ntfy.received
    assert (request.method, request.path, request.query) == ("POST", "/", "")  # no topic in logs
    assert request.caller == token and published.user == "alice"
    message = published.message
    assert {k: v for k, v in message.items() if k not in ("id", "time", "expires", "actions")} == {
        "event": "message", "topic": TOPIC, "title": "New mail",
        "message": "**From:** bob@example\\.com", "priority": 4, "tags": ["email", "warning"],
        "click": "https://mail.example/m1", "icon": "https://mail.example/i.png",
        "content_type": "text/markdown",
    }  # fmt: skip
    assert [{k: v for k, v in a.items() if k != "id"} for a in message["actions"]] == [
        {"action": "view", "label": "Open", "url": "https://mail.example/m1", "clear": False},
        {"action": "http", "label": "Mark read", "url": "https://hooks.example/read",
         "method": "PUT", "headers": {"X-Key": "k"}, "clear": True},
    ]  # fmt: skip


async def test_basic_auth_publishes_plain_text_as_the_user(
    ntfy: NtfySim, session: aiohttp.ClientSession
) -> None:
    sink = make_sink(ntfy, session, username="alice", password=PASSWORD)
    await sink.send(note(sink))
    (published,) = ntfy.received
    assert published.user == "alice" and ntfy.requests[0].caller == "alice"
    assert published.message["message"] == "From: bob@example.com"
    assert "content_type" not in published.message and "click" not in published.message


@pytest.mark.parametrize(
    ("priority", "expected"),
    [("min", 1), ("low", 2), ("default", 3), ("high", 4), ("urgent", 5)],
)
async def test_priorities_map_to_ntfy_s_one_to_five(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str, priority: str, expected: int
) -> None:
    sink = make_sink(ntfy, session, token=token)
    await sink.send(note(sink, priority=priority))
    assert ntfy.messages()[0]["priority"] == expected


async def test_markup_in_item_content_stays_text(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    markdown = make_sink(ntfy, session, token=token, format="markdown")
    await markdown.send(note(markdown, INJECTION))
    plain = make_sink(ntfy, session, token=token)
    await plain.send(note(plain, INJECTION))
    shown_as_markdown, shown_as_text = ntfy.messages()
    content = shown_as_markdown["message"].removeprefix("**From:** ")
    assert unescaped(content) == []  # every special is backslashed: no bold, link, code, HTML
    assert content.replace("\\", "") == INJECTION.replace("\\", "")
    assert unescaped(shown_as_markdown["message"]) == ["*"] * 4  # only the template's bold
    assert shown_as_text["message"] == f"From: {INJECTION}"  # shown as sent, never rendered
    assert "content_type" not in shown_as_text


async def test_an_empty_message_sends_the_title_instead_of_triggered(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(ntfy, session, token=token, format="markdown")
    await sink.send(note(sink, title="Code *123*", message=""))
    (message,) = ntfy.messages()
    assert message["message"] == "Code \\*123\\*" and "title" not in message


@pytest.mark.parametrize(
    ("fmt", "content"),
    [("text", "é" * 3000), ("markdown", "*_" * 3000), ("text", '"\n' * 3000)],
    ids=["multibyte", "escapes-double-in-json", "quotes-and-newlines"],
)
async def test_a_long_message_is_cut_to_ntfy_s_limits(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str, fmt: str, content: str
) -> None:
    sink = make_sink(ntfy, session, token=token, format=fmt)
    notification = note(sink, content, title="T" * 1000)
    assert len(json.dumps(sink.payload(notification), ensure_ascii=False).encode()) <= JSON_LIMIT
    await sink.send(notification)
    (message,) = ntfy.messages()
    assert "attachment" not in message  # ntfy would have made a long message a file
    assert len(message["message"].encode()) <= MESSAGE_LIMIT
    assert message["message"].startswith(notification.message[:10])
    cut = message["message"].removesuffix("…").removeprefix("**From:** ")
    assert cut != message["message"] and len(message["title"]) <= 250
    if fmt == "markdown":
        assert unescaped(cut) == []  # the cut never leaves half an escape


async def test_the_simulator_keeps_a_long_message_as_an_attachment_like_ntfy(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"topic": TOPIC, "message": "x" * 5000}
    async with session.post(ntfy.base_url, json=body, headers=auth) as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["message"] == "You received a file: attachment.txt"
    assert answer["attachment"]["size"] == 5000
    body["message"] = "x" * (JSON_LIMIT + 1)
    async with session.post(ntfy.base_url, json=body, headers=auth) as resp:
        assert (resp.status, (await resp.json())["code"]) == (413, 41303)


async def test_ntfy_s_request_limit_is_a_transient_error_with_its_refill_time(
    session: aiohttp.ClientSession,
) -> None:
    async with NtfySim(burst=2, refill=5.0, clock=lambda: 1000.0) as ntfy:  # time stands still
        sink = make_sink(ntfy, session)
        await sink.send(note(sink))
        await sink.send(note(sink))
        with pytest.raises(TransientError) as caught:
            await sink.send(note(sink))
    assert caught.value.status == 429 and caught.value.retry_after == 5.0
    assert "42901" in str(caught.value) and len(ntfy.received) == 2


async def test_a_retry_after_header_on_a_429_is_honoured(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    ntfy.inject("rate_limited", retry_after=42)
    sink = make_sink(ntfy, session, token=token)
    with pytest.raises(TransientError) as caught:
        await sink.send(note(sink))
    assert caught.value.status == 429 and caught.value.retry_after == 42.0


async def test_the_daily_message_quota_waits_for_its_reset(session: aiohttp.ClientSession) -> None:
    async with NtfySim(daily_limit=1) as ntfy:
        sink = make_sink(ntfy, session)
        await sink.send(note(sink))
        with pytest.raises(QuotaError) as caught:
            await sink.send(note(sink))
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 86400


@pytest.mark.parametrize(
    "keys",
    [{"token": "tk_" + "x" * 29}, {"username": "alice", "password": "wrong-password-123"}],
    ids=["token", "password"],
)
async def test_refused_credentials_are_an_auth_error_without_the_secret(
    ntfy: NtfySim, session: aiohttp.ClientSession, keys: dict[str, str]
) -> None:
    sink = make_sink(ntfy, session, **keys)
    with pytest.raises(AuthError) as caught:
        await sink.send(note(sink))
    text = str(caught.value)
    assert text.startswith("phone: ") and "40101" in text and "token or username" in text
    secret = keys.get("token") or keys["password"]
    assert secret not in text and base64.b64encode(f"alice:{secret}".encode()).decode() not in text
    assert TOPIC not in text


async def test_a_topic_the_user_may_not_write_is_an_auth_error(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    ntfy.allow("alice", "read-only-*", "read-only")
    sink = make_sink(ntfy, session, token=token, url=f"{ntfy.base_url}/read-only-news")
    with pytest.raises(AuthError, match="write access") as caught:
        await sink.send(note(sink))
    assert caught.value.status == 403 and ntfy.received == []


GET_WITH_BODY = {"action": "http", "label": "x", "url": "https://a", "method": "GET", "body": "b"}


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"actions": [{"action": "view", "label": "x", "url": "https://a"}] * 4}, "actions"),
        ({"actions": [{"action": "view", "url": "https://a"}]}, "options.actions.0.view.label"),
        ({"actions": [{"action": "call", "label": "x"}]}, "options.actions.0"),
        ({"actions": [GET_WITH_BODY]}, "cannot have a body"),
        ({"icon": "file:///etc/passwd"}, "options.icon"),
        ({"silent": True}, "options.silent"),
    ],
)
async def test_options_ntfy_would_refuse_fail_before_sending(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str, options: dict[str, Any], where: str
) -> None:
    sink = make_sink(ntfy, session, token=token)
    with pytest.raises(PermanentError, match=where.replace(".", r"\.")):
        await sink.send(note(sink, options=options))
    assert ntfy.requests == []


@pytest.mark.parametrize(
    ("fault", "params", "error"),
    [
        ("status", {"status": 500}, TransientError),
        ("html", {"status": 502}, TransientError),
        ("status", {"status": 400, "code": 40007}, PermanentError),
    ],
)
async def test_server_answers_are_classified(
    ntfy: NtfySim,
    session: aiohttp.ClientSession,
    token: str,
    fault: str,
    params: dict[str, Any],
    error: type[Exception],
) -> None:
    ntfy.inject(fault, **params)
    sink = make_sink(ntfy, session, token=token)
    with pytest.raises(error):
        await sink.send(note(sink))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"url": "https://ntfy.sh/"}, "must end with a topic"),
        ({"url": "ntfy.sh/alice"}, "server and the topic"),
        ({"url": "https://ntfy.sh/a", "token": "tk_x", "username": "a", "password": "b"}, "both"),
        ({"url": "https://ntfy.sh/a", "username": "a"}, "go together"),
        ({"url": "https://ntfy.sh/a", "format": "html"}, "format"),
    ],
)
def test_the_configuration_is_checked(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NtfyConfig(type="ntfy", **keys)


RULE = """\
- name: to-phone
  when: {kind: email}
  notify: [{sink: phone, template: email, priority: high}]
"""


async def test_an_outage_keeps_the_notification_until_ntfy_is_back(
    setup: Setup, ntfy: NtfySim, token: str
) -> None:
    mail(setup, "during the outage")
    sink = f'  phone: {{type: ntfy, url: "{ntfy.base_url}/{TOPIC}", token: "{token}"}}\n'
    async with setup.pipeline(RULE, sinks=sink) as pipe:
        await through_an_outage(pipe, ntfy.set_down)
    assert [(m["title"], m["priority"]) for m in ntfy.messages()] == [("during the outage", 4)]
    assert sum(1 for r in ntfy.requests if r.status == 503) >= 6


async def test_markdown_keeps_a_templates_lines(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(ntfy, session, token=token, format="markdown")
    await sink.send(note(sink, message="**Code** 123456\nfrom bob\n\nsecond paragraph"))
    (shown,) = ntfy.messages()
    assert shown["message"] == "**Code** 123456  \nfrom bob\n\nsecond paragraph"


async def test_a_200_item_digest_is_taken_within_the_size_limit(
    ntfy: NtfySim, session: aiohttp.ClientSession, token: str
) -> None:
    sink = make_sink(ntfy, session, token=token, format="markdown")
    await sink.send(digest_of_200(sink))
    (message,) = ntfy.messages()
    assert len(message["message"].encode()) <= 4096 and "Newsletter 0" in message["message"]
