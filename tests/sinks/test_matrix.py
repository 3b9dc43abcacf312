"""The matrix sink against a real Synapse homeserver (started once for this module), and
against a tiny stub for the answers Synapse cannot be made to give on demand."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.errors import AuthError, PermanentError, TransientError
from bot.sinks.base import Notification
from bot.sinks.matrix import (
    BODY_LIMIT,
    FORMATTED_LIMIT,
    MatrixConfig,
    MatrixSink,
    fit_html,
    json_size,
)
from tests.conftest import Setup
from tests.servers import synapse as synapse_server
from tests.servers.synapse import MatrixUser, Synapse
from tests.sinks.shared import deliver_round

INJECTION = "*bold* _x_ <b>x</b> @here @room @all bob [link](http://evil) `code`"
PARTIAL = re.compile(r"<[^>]*$|&[#\w]*$")  # half a tag or entity at the end
TOKEN = "syt_d3JvbmcgdG9rZW4_secretsecret_0xy1z2"


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    reason = synapse_server.missing()
    if reason:
        pytest.skip(reason)
    with synapse_server.running(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture
def alice(synapse: Synapse) -> MatrixUser:
    return synapse.user("alice")


@pytest.fixture
def room(alice: MatrixUser) -> str:
    return alice.create_room()


def make_sink(
    session: aiohttp.ClientSession, url: str, token: str, room: str, **keys: Any
) -> MatrixSink:
    config = MatrixConfig(type="matrix", homeserver=url, token=token, room=room, **keys)  # type: ignore[arg-type]
    return MatrixSink("mx", config, session)


def note(nid: str = "n1", title: str = "Hello", message: str = "", **fields: Any) -> Notification:
    fields.setdefault("priority", "default")
    fields.setdefault("url", None)
    return Notification(id=nid, rule="r", account="inbox", feed="messages", kind="email",
                        item_id="i1", title=title, message=message, **fields)  # fmt: skip


# --- against the real Synapse --------------------------------------------------------


async def test_the_message_is_read_back_exactly_and_content_stays_text(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser, room: str
) -> None:
    sink = make_sink(session, synapse.url, alice.token, room)
    message = f"From bob:\n{sink.escape(INJECTION)}"
    url = "https://mail.example/m/1?a=1&b=2"
    await sink.send(note(title='Invoice <1> & "co"', message=message, url=url))
    (content,) = alice.messages(room)
    assert content == {
        "msgtype": "m.text",
        "body": f'Invoice <1> & "co"\nFrom bob:\n{INJECTION}\n{url}',
        "format": "org.matrix.custom.html",
        "formatted_body": '<b><a href="https://mail.example/m/1?a=1&amp;b=2">Invoice &lt;1&gt; '
        "&amp; &quot;co&quot;</a></b><br>From bob:<br>*bold* _x_ &lt;b&gt;x&lt;/b&gt; @here "
        "@room @all bob [link](http://evil) `code`",
        "m.mentions": {},
    }


async def test_text_format_sends_the_body_only(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser, room: str
) -> None:
    sink = make_sink(session, synapse.url, alice.token, room, format="text")
    await sink.send(note(title="Code <b>1</b>", message=f"line 1\n{INJECTION}"))
    assert alice.messages(room) == [
        {"msgtype": "m.text", "body": f"Code <b>1</b>\nline 1\n{INJECTION}", "m.mentions": {}}
    ]


def highlighted(actions: list[Any]) -> bool:
    return any(isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True)
               for a in actions)  # fmt: skip


async def test_content_pings_nobody_and_low_priority_is_a_silent_notice(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser
) -> None:
    bob = synapse.user("bob")
    room = alice.create_room(invite=(bob.user_id,))
    bob.join(room)
    legacy = alice.send(room, {"msgtype": "m.text", "body": "@room look"}, "legacy")
    sink = make_sink(session, synapse.url, alice.token, room)
    await sink.send(
        note("loud", title="@room bob", message=sink.escape(INJECTION), priority="high")
    )
    await sink.send(note("quiet", title="fyi", priority="low"))
    await sink.send(note("forced", title="fyi", priority="urgent", options={"notice": True}))
    events = {e["content"]["body"].split("\n")[0]: e for e in alice.events(room)}
    pushed = bob.notifications()
    assert highlighted(pushed[legacy])  # the control: without m.mentions, @room pings
    loud = events["@room bob"]
    assert loud["content"]["msgtype"] == "m.text" and not highlighted(pushed[loud["event_id"]])
    notices = [e for e in alice.events(room) if e["content"]["msgtype"] == "m.notice"]
    assert len(notices) == 2 and not {e["event_id"] for e in notices} & set(pushed)


async def test_a_retried_send_posts_one_event(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser, room: str
) -> None:
    sink = make_sink(session, synapse.url, alice.token, room)
    first = note("3f2a9c0d41b7e8a6c5d4e3f2a1b0c9d8", title="once")
    await sink.send(first)
    await sink.send(first)  # the answer "was lost": the pipeline retries
    restarted = make_sink(session, synapse.url, alice.token, room)
    await restarted.send(first)
    await sink.send(note("not/url safe id ✓", title="other"))
    await sink.send(note("not/url safe id ✓", title="other"))
    assert [m["body"] for m in alice.messages(room)] == ["once", "other"]


async def send_retrying(sink: MatrixSink, notification: Notification) -> None:
    """As the pipeline would: a transient failure (a connection of the old process) is
    retried with the same notification."""
    for _ in range(3):
        try:
            return await sink.send(notification)
        except TransientError:
            continue
    raise AssertionError("the homeserver did not come back")


async def test_a_retry_after_a_homeserver_restart_is_not_duplicated(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser, room: str
) -> None:
    sink = make_sink(session, synapse.url, alice.token, room)
    sent = note("before-restart", title="sent before a restart")
    await sink.send(sent)
    synapse.stop()  # the answer "was lost", the homeserver restarts
    synapse.launch()
    await send_retrying(sink, sent)
    assert [m["body"] for m in alice.messages(room)] == ["sent before a restart"]


async def test_an_alias_is_resolved_once(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser
) -> None:
    name = f"inbox-{uuid.uuid4().hex[:8]}"
    room = alice.create_room(alias=name)
    sink = make_sink(session, synapse.url, alice.token, f"#{name}:localhost")
    await sink.send(note("a1", title="first"))
    assert sink.room_id == room
    alice.call("DELETE", f"/directory/room/%23{name}%3Alocalhost")  # a lookup would fail now
    await sink.send(note("a2", title="second"))
    assert [m["body"] for m in alice.messages(room)] == ["first", "second"]


async def test_an_unknown_alias_is_permanent(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser
) -> None:
    sink = make_sink(session, synapse.url, alice.token, "#nowhere:localhost")
    with pytest.raises(PermanentError, match="no room has the alias #nowhere:localhost"):
        await sink.send(note())


async def test_a_wrong_token_is_an_auth_error_without_the_token(
    session: aiohttp.ClientSession, synapse: Synapse, room: str
) -> None:
    sink = make_sink(session, synapse.url, TOKEN, room)
    with pytest.raises(AuthError) as caught:
        await sink.send(note())
    text = str(caught.value)
    assert text.startswith("mx: ") and "M_UNKNOWN_TOKEN" in text and "token" in text
    assert (
        TOKEN not in text
        and "secretsecret" not in text
        and "secretsecret" not in repr(caught.value.args)
    )


async def test_a_room_the_bot_is_not_in_is_permanent(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser
) -> None:
    foreign = synapse.user("bob").create_room()
    sink = make_sink(session, synapse.url, alice.token, foreign)
    with pytest.raises(PermanentError, match=f"not in room {foreign}.*invite it and join it"):
        await sink.send(note())


@pytest.mark.parametrize("fmt", ["html", "text"])
async def test_an_overlong_message_is_cut_to_fit_and_accepted(
    session: aiohttp.ClientSession, synapse: Synapse, alice: MatrixUser, room: str, fmt: str
) -> None:
    sink = make_sink(session, synapse.url, alice.token, room, format=fmt)
    content = 'quote " tab \t emoji 😀 <tag> & ' * 5000  # ~190 KB as UTF-8, more as JSON
    url = "https://mail.example/long"
    await sink.send(note(title="Long", message=sink.escape(content), url=url))
    (got,) = alice.messages(room)
    assert got["body"].startswith('Long\nquote " tab') and got["body"].endswith(f"…\n{url}")
    assert BODY_LIMIT - 100 < json_size(got["body"]) <= BODY_LIMIT
    if fmt == "html":
        formatted = got["formatted_body"]
        assert formatted.startswith(
            '<b><a href="https://mail.example/long">Long</a></b><br>quote &quot;'
        )
        assert (
            formatted.endswith("…")
            and FORMATTED_LIMIT - 100 < json_size(formatted) <= FORMATTED_LIMIT
        )
        assert not PARTIAL.search(formatted[:-1])


async def test_a_real_429_carries_synapses_retry_hint(
    session: aiohttp.ClientSession, synapse: Synapse
) -> None:
    carol = synapse.user("carol", limited=True)  # rc_message: 0.1/s, burst 5
    sink = make_sink(session, synapse.url, carol.token, carol.create_room())
    with pytest.raises(TransientError) as caught:
        for i in range(int(synapse_server.MESSAGE_RATE["burst_count"]) + 2):
            await sink.send(note(f"burst{i}", title=f"burst {i}"))
    err = caught.value
    assert err.status == 429 and "M_LIMIT_EXCEEDED" in str(err)
    assert err.retry_after is not None and 0 < err.retry_after <= 10


# --- against a stub, for answers Synapse gives only under conditions --------------------


@dataclass
class Stub:
    """A server that answers every request with the next queued response."""

    url: str
    answers: list[web.Response]


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    answers: list[web.Response] = []

    async def answer(request: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Stub(str(server.make_url("")), answers)
    await server.close()


LIMITED = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests"}


@pytest.mark.parametrize(
    ("body", "headers", "hint"),
    [
        ({**LIMITED, "retry_after_ms": 2000}, {}, 2.0),  # Synapse's body hint
        (LIMITED, {"Retry-After": "7"}, 7.0),  # the spec since v1.10: the header only
        ({**LIMITED, "retry_after_ms": 1500}, {"Retry-After": "2"}, 2.0),  # the longer wins
        (LIMITED, {}, None),
    ],
)
async def test_429_hints_in_body_or_header(
    session: aiohttp.ClientSession,
    stub: Stub,
    body: dict[str, Any],
    headers: dict[str, str],
    hint: float | None,
) -> None:
    stub.answers.append(web.json_response(body, status=429, headers=headers))
    with pytest.raises(TransientError) as caught:
        await make_sink(session, stub.url, TOKEN, "!r:example.org").send(note())
    assert caught.value.retry_after == hint


async def test_a_proxy_error_page_is_transient(session: aiohttp.ClientSession, stub: Stub) -> None:
    page = web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
    stub.answers.append(page)
    with pytest.raises(TransientError, match="HTTP 502"):
        await make_sink(session, stub.url, TOKEN, "!r:example.org").send(note())


def test_html_is_never_cut_inside_a_tag_or_an_entity() -> None:
    html = '<b><a href="https://x.example/?a=1&amp;b=2">T &amp; U</a></b><br>' + "&lt;i&gt; ✓ " * 20
    for limit in range(10, json_size(html) + 2):
        cut = fit_html(html, limit)
        assert json_size(cut) <= limit or cut == "…"
        assert cut == html or (cut.endswith("…") and not PARTIAL.search(cut[:-1]))


def test_the_config_refuses_what_is_not_a_room_or_url() -> None:
    with pytest.raises(ValueError, match="neither a room id"):
        MatrixConfig(type="matrix", homeserver="https://m.org", token="t", room="inbox")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a server's address"):
        MatrixConfig(type="matrix", homeserver="m.org", token="t", room="!a:m.org")  # type: ignore[arg-type]


# --- the pipeline: an outage longer than the retry schedule ------------------------------


TO_MATRIX = """\
- name: to-matrix
  when: {kind: email}
  notify: [{sink: mx, template: email}]
"""


async def test_an_outage_keeps_the_notification_until_the_homeserver_is_back(
    setup: Setup, synapse: Synapse, alice: MatrixUser, room: str
) -> None:
    sinks = (f'  mx: {{type: matrix, homeserver: "{synapse.url}", token: "{alice.token}", '
             f'room: "{room}", timeout: 10s}}\n')  # fmt: skip
    setup.sim.add_message(setup.account, sender="bob@example.com", subject="Outage",
                          text_body="Body of Outage")  # fmt: skip
    synapse.stop()
    try:
        async with setup.pipeline(TO_MATRIX, sinks=sinks) as pipe:
            for hours in range(1, 6):  # past the backoff cap each time: five failed attempts
                await deliver_round(pipe, hours)
                assert pipe.store.outbox_depth() == 1
            (step,) = pipe.store.pending_steps("deliver")
            assert step.attempts == 5
            synapse.launch()
            await deliver_round(pipe, 6)
            await deliver_round(pipe, 7)
            assert pipe.store.outbox_depth() == 0
    finally:
        if synapse.process is None:
            synapse.launch()
    assert [m["body"] for m in alice.messages(room)] == ["Outage\nBody of Outage"]
