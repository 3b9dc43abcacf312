"""The Gotify sink against the Gotify simulator, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from bot.errors import AuthError, PermanentError, TransientError
from bot.sim.gotify import GotifySim, SimApp
from bot.sinks.base import Notification
from bot.sinks.gotify import MESSAGE_LIMIT, GotifyConfig, GotifySink
from tests.conftest import Setup
from tests.sinks.shared import digest_of_200, rendered, through_an_outage
from tests.sinks.test_ntfy import INJECTION, unescaped
from tests.test_pipeline import mail


@pytest.fixture
async def gotify() -> AsyncIterator[GotifySim]:
    async with GotifySim(mysql=True) as simulator:
        yield simulator


@pytest.fixture
def app(gotify: GotifySim) -> SimApp:
    return gotify.add_app("inboxbot", default_priority=2)


def make_sink(
    gotify: GotifySim, session: aiohttp.ClientSession, token: str, **keys: Any
) -> GotifySink:
    config = GotifyConfig(type="gotify", url=gotify.base_url, token=token, **keys)
    return GotifySink("gotify", config, session)


def note(sink: GotifySink, content: str = "bob@example.com", **kwargs: Any) -> Notification:
    return rendered(
        sink, "**From:** " if sink.format == "markdown" else "From: ", content, **kwargs
    )


async def test_a_notification_is_posted_as_gotify_documents(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token, format="markdown")
    notification = note(sink, url="https://mail.example/m1", priority="high",
                        options={"big_image_url": "https://mail.example/big.png"})  # fmt: skip
    await sink.send(notification)
    ((request,), (received,)) = gotify.requests, gotify.received
    assert (request.method, request.path, request.query) == ("POST", "/message", "")
    assert received.token_via == "header" and request.caller == app.token
    assert {k: v for k, v in received.message.items() if k not in ("id", "date")} == {
        "appid": app.id,
        "title": "New mail",
        "message": "**From:** bob@example\\.com",
        "priority": 8,
        "extras": {
            "client::display": {"contentType": "text/markdown"},
            "client::notification": {
                "click": {"url": "https://mail.example/m1"},
                "bigImageUrl": "https://mail.example/big.png",
            },
        },
    }


async def test_plain_text_says_so_and_has_no_click_without_a_url(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token)
    await sink.send(note(sink))
    (message,) = gotify.messages()
    assert message["message"] == "From: bob@example.com"
    assert message["extras"] == {"client::display": {"contentType": "text/plain"}}


@pytest.mark.parametrize(
    ("priority", "expected"),
    [("min", 1), ("low", 3), ("default", 5), ("high", 8), ("urgent", 10)],
)
async def test_priorities_map_to_what_gotify_clients_do_with_them(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp, priority: str, expected: int
) -> None:
    sink = make_sink(gotify, session, app.token)
    await sink.send(note(sink, priority=priority))
    assert gotify.messages()[0]["priority"] == expected


async def test_markup_in_item_content_stays_text(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    markdown = make_sink(gotify, session, app.token, format="markdown")
    await markdown.send(note(markdown, INJECTION))
    plain = make_sink(gotify, session, app.token)
    await plain.send(note(plain, INJECTION))
    shown_as_markdown, shown_as_text = gotify.messages()
    content = shown_as_markdown["message"].removeprefix("**From:** ")
    assert unescaped(content) == []  # every special is backslashed: no bold, link, code, HTML
    assert content.replace("\\", "") == INJECTION.replace("\\", "")
    assert unescaped(shown_as_markdown["message"]) == ["*"] * 4  # only the template's bold
    assert shown_as_text["message"] == f"From: {INJECTION}"
    assert shown_as_text["extras"]["client::display"]["contentType"] == "text/plain"


async def test_an_empty_message_sends_the_title_as_the_message(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token, format="markdown")
    await sink.send(note(sink, title="Code *123*", message=""))
    (message,) = gotify.messages()
    assert message["message"] == "Code \\*123\\*" and message["title"] == "inboxbot"


async def test_a_long_message_fits_gotify_s_smallest_database_column(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token)
    await sink.send(note(sink, "ü" * 40_000, title="T" * 1000))  # 80 kB of UTF-8
    (message,) = gotify.messages()
    assert len(message["message"].encode()) <= MESSAGE_LIMIT
    assert message["message"].startswith("From: üü") and message["message"].endswith("…")
    assert len(message["title"]) <= 250


async def test_the_simulator_fails_an_over_long_message_like_gotify_on_mysql(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    body = {"message": "x" * (MESSAGE_LIMIT + 1)}
    headers = {"X-Gotify-Key": app.token}
    async with session.post(f"{gotify.base_url}/message", json=body, headers=headers) as resp:
        answer = await resp.json()
    assert resp.status == 500 and "Data too long for column 'message'" in answer["errorDescription"]


async def test_a_proxy_s_429_is_transient_with_its_retry_after(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    gotify.inject("rate_limited", retry_after=37)
    sink = make_sink(gotify, session, app.token)
    with pytest.raises(TransientError) as caught:
        await sink.send(note(sink))
    assert caught.value.status == 429 and caught.value.retry_after == 37.0


async def test_a_refused_token_is_an_auth_error_without_the_token(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    wrong = "C" + "x" * 14  # a client's token, say
    sink = make_sink(gotify, session, wrong)
    with pytest.raises(AuthError) as caught:
        await sink.send(note(sink))
    text = str(caught.value)
    assert text.startswith("gotify: ") and "401" in text and "application's token" in text
    assert "you need to provide a valid access token" in text
    assert wrong not in text and app.token not in text
    assert gotify.received == []


MISSING = "Field 'message' is required"


@pytest.mark.parametrize(
    ("fault", "params", "error", "said"),
    [
        ("status", {"status": 500}, TransientError, "Internal Server Error"),
        ("html", {"status": 502}, TransientError, "502"),
        ("status", {"status": 400, "description": MISSING}, PermanentError, MISSING),
    ],
)
async def test_server_answers_are_classified(
    gotify: GotifySim,
    session: aiohttp.ClientSession,
    app: SimApp,
    fault: str,
    params: dict[str, Any],
    error: type[Exception],
    said: str,
) -> None:
    gotify.inject(fault, **params)
    sink = make_sink(gotify, session, app.token)
    with pytest.raises(error, match=said):
        await sink.send(note(sink))


async def test_the_simulator_refuses_what_gotify_refuses(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    url, key = f"{gotify.base_url}/message", {"X-Gotify-Key": app.token}
    cases = [
        ({}, {"message": "hi"}, 401, "valid access token"),
        (key, {"title": "no message"}, 400, "Field 'message' is required"),
        (key, {"message": "hi", "priority": "high"}, 400, "Field 'priority' is not valid"),
    ]
    for headers, body, status, description in cases:
        async with session.post(url, json=body, headers=headers) as resp:
            answer = await resp.json()
        assert (resp.status, answer["errorCode"]) == (status, status)
        assert description in answer["errorDescription"]
    async with session.post(url, data={"message": "form"}, headers=key) as resp:
        assert (await resp.json())["priority"] == app.default_priority


async def test_options_gotify_cannot_use_fail_before_sending(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token)
    with pytest.raises(PermanentError, match=r"options\.tags"):
        await sink.send(note(sink, options={"tags": ["x"]}))
    assert gotify.requests == []


@pytest.mark.parametrize(
    "keys",
    [{"url": "gotify.example.org"}, {"url": "https://g.example/?token=x"}, {"format": "html"}],
)
def test_the_configuration_is_checked(keys: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GotifyConfig(**{"type": "gotify", "url": "https://g.example", "token": "A", **keys})


RULE = """\
- name: to-gotify
  when: {kind: email}
  notify: [{sink: gotify, template: email, priority: urgent}]
"""


async def test_an_outage_keeps_the_notification_until_gotify_is_back(
    setup: Setup, gotify: GotifySim, app: SimApp
) -> None:
    mail(setup, "during the outage")
    sink = f'  gotify: {{type: gotify, url: "{gotify.base_url}", token: "{app.token}"}}\n'
    async with setup.pipeline(RULE, sinks=sink) as pipe:
        await through_an_outage(pipe, gotify.set_down)
    assert [(m["title"], m["priority"]) for m in gotify.messages()] == [("during the outage", 10)]
    assert sum(1 for r in gotify.requests if r.status == 503) >= 6


async def test_markdown_keeps_a_templates_lines(
    gotify: GotifySim, app: SimApp, session: aiohttp.ClientSession
) -> None:
    sink = make_sink(gotify, session, app.token, format="markdown")
    await sink.send(note(sink, message="line one\nline two"))
    assert gotify.messages()[0]["message"] == "line one  \nline two"
    text = make_sink(gotify, session, app.token)
    await text.send(note(text, message="line one\nline two"))
    assert gotify.messages()[1]["message"] == "line one\nline two"


async def test_a_200_item_digest_is_taken_whole(
    gotify: GotifySim, session: aiohttp.ClientSession, app: SimApp
) -> None:
    sink = make_sink(gotify, session, app.token, format="markdown")
    await sink.send(digest_of_200(sink))
    (message,) = gotify.messages()
    assert "Newsletter 199" in message["message"]  # Gotify has no length limit
