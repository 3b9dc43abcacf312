"""The Rocket.Chat client against the simulator over HTTP: polls, actions, auth, errors,
rate limits, and the whole pipeline on top."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from bot.app import load, running
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.http import Limiters
from bot.item import Item
from bot.render import Renderer
from bot.sim.rocketchat import RocketChatSim, SimRoom, SimUser
from bot.sim.webhook import HookReceiver
from bot.sources import Feed
from bot.sources.rocketchat import (
    MAX_ROOMS,
    DmCursor,
    RocketChatAccount,
    RocketChatSource,
    parse_time,
)


def source(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession, **over: Any
) -> RocketChatSource:
    auth = {"user_id": me.id, "token": me.token}
    if "username" in over:
        auth = {}
    config = RocketChatAccount.model_validate(
        {"type": "rocketchat", "base_url": rc.base_url, "timeout": "2s", "rate": 100_000,
         **auth, **over}
    )  # fmt: skip
    return RocketChatSource("work", config, session, Limiters())


def login_source(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession, password: str = "wonderland"
) -> RocketChatSource:
    return source(rc, me, session, username=me.username, password=password)


def history_rooms(rc: RocketChatSim) -> list[str]:
    return [r.query.split("roomId=")[1].split("&")[0] for r in rc.requests_to("dm.history")]


def texts(items: list[Item]) -> list[str]:
    return [i.text for i in items]


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


# Configuration.


@pytest.mark.parametrize(
    "auth",
    [
        {"user_id": "u1", "token": "t", "username": "a", "password": "p"},
        {},
        {"user_id": "u1"},
        {"username": "a", "token": "t"},
    ],
)
def test_exactly_one_way_to_log_in(auth: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="user_id \\+ token"):
        RocketChatAccount.model_validate({"type": "rocketchat", **auth})


async def test_realtime_is_off_by_default_and_pushes_when_on(
    session: aiohttp.ClientSession,
) -> None:
    config = RocketChatAccount.model_validate(
        {"type": "rocketchat", "user_id": "u", "token": "t", "realtime": True}
    )
    assert config.realtime and config.every == timedelta(minutes=1) and config.rate == (10, 60.0)
    default = RocketChatAccount.model_validate({"type": "rocketchat", "user_id": "u", "token": "t"})
    assert not default.realtime
    assert RocketChatSource("work", config, session, Limiters()).pushes("dms")
    assert not RocketChatSource("work", default, session, Limiters()).pushes("dms")


# Polling.


async def test_the_first_poll_reads_unread_rooms_only(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    quiet = rc.direct(me, rc.add_user("carol"))
    rc.add_message(quiet, "carol", "old news")
    rc.mark_read(quiet, me)
    rc.add_message(dm, bob, "are you there?")
    rc.add_message(dm, me, "yes")
    rc.add_message(rc.channel("general", me, bob), bob, "channel chatter")
    result = await source(rc, me, session).poll("dms", None)
    assert texts(result.items) == ["are you there?"]
    assert history_rooms(rc) == [dm.id]
    cursor = json.loads(result.cursor or "")
    assert set(cursor) == {"since", "edge", "rooms"} and list(cursor["rooms"]) == [dm.id]


async def test_the_first_poll_takes_the_newest_50_unread(
    rc: RocketChatSim, bob: SimUser, dm: SimRoom, me: SimUser, session: aiohttp.ClientSession
) -> None:
    for n in range(70):
        rc.add_message(dm, bob, f"m{n}")
    result = await source(rc, me, session).poll("dms", None)
    assert texts(result.items) == [f"m{n}" for n in range(20, 70)]
    assert len(rc.requests_to("dm.history")) == 1


async def test_later_polls_fetch_only_rooms_that_changed(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    other = rc.direct(me, rc.add_user("carol"))
    rc.add_message(dm, bob, "first")
    src = source(rc, me, session)
    first = await src.poll("dms", None)
    rc.requests.clear()
    quiet = await src.poll("dms", first.cursor)
    assert quiet.items == [] and rc.requests_to("dm.history") == []
    assert "updatedSince=" in rc.requests_to("subscriptions.get")[0].query
    rc.add_message(other, "carol", "hello from carol")
    second = await src.poll("dms", quiet.cursor)
    assert texts(second.items) == ["hello from carol"]
    assert history_rooms(rc) == [other.id]
    assert len(rc.requests_to("subscriptions.get")) == 2


async def test_a_message_saved_in_the_millisecond_of_the_cursor_is_not_missed(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    frozen = time.time() + 1
    rc.clock = lambda: frozen
    carol = rc.direct(me, rc.add_user("carol"))  # its subscription sets the cursor's `since`
    src = source(rc, me, session)
    first = await src.poll("dms", None)
    rc.add_message(dm, bob, "same millisecond")  # after the answer, in the same millisecond
    assert DmCursor.load(first.cursor).since == rc.subscription(dm, me).updated_at
    assert DmCursor.load(first.cursor).edge == {rc.subscription(carol, me).id}
    second = await src.poll("dms", first.cursor)
    assert texts(second.items) == ["same millisecond"]
    assert (await src.poll("dms", second.cursor)).items == []


async def test_thread_replies_are_items(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    src = source(rc, me, session)
    cursor = (await src.poll("dms", None)).cursor
    mine = rc.add_message(dm, me, "shall we ship?")
    reply = rc.add_message(dm, bob, "yes, in my thread reply", tmid=mine.id)
    (item,) = (await src.poll("dms", cursor)).items
    assert item.id == reply.id and item.raw["tmid"] == mine.id
    assert "showThreadMessages=true" in rc.requests_to("dm.history")[0].query


async def test_a_reply_in_a_thread_nobody_told_us_about_comes_with_the_next_change(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    src = source(rc, me, session)
    parent = rc.add_message(dm, bob, "my own thread")
    cursor = (await src.poll("dms", None)).cursor
    rc.add_message(dm, bob, "talking to myself", tmid=parent.id)  # alice does not follow
    quiet = await src.poll("dms", cursor)
    assert quiet.items == []
    rc.add_message(dm, bob, "anyway")
    later = await src.poll("dms", quiet.cursor)
    # the window starts a little before the newest message seen: the store drops repeats
    assert texts(later.items)[-2:] == ["talking to myself", "anyway"]


async def test_own_and_system_messages_are_never_items(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    src = source(rc, me, session)
    cursor = (await src.poll("dms", None)).cursor
    rc.add_message(dm, me, "mine")
    rc.add_message(dm, bob, "", t="uj")
    rc.add_message(dm, bob, "theirs")
    result = await src.poll("dms", cursor)
    assert texts(result.items) == ["theirs"]


async def test_group_dms(
    rc: RocketChatSim, me: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    group = rc.direct(me, bob, rc.add_user("carol", "Carol Chen"))
    rc.add_message(group, "carol", "team lunch?")
    (item,) = (await source(rc, me, session).poll("dms", None)).items
    assert (item.sender, item.recipient, item.subject) == ("carol", "bob, carol",
                                                           "Bob Builder, Carol Chen")  # fmt: skip
    assert item.raw["u"]["name"] == "Carol Chen"
    assert item.url == f"{rc.base_url}/direct/{group.id}?msg={item.id}"


async def test_an_item_is_normalized(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    rc.add_message(dm, bob, "PR: https://git.example.org/pr/1.")
    rc.add_message(dm, bob, "", file=("shot.png", "image/png", 1234))
    src = source(rc, me, session)
    text, upload = (await src.poll("dms", None)).items
    assert (text.account, text.feed, text.kind, text.sender) == ("work", "dms", "chat", "bob")
    assert (text.recipient, text.subject, text.unread) == ("bob", "", True)
    assert text.links == ("https://git.example.org/pr/1",)
    assert text.created_at.tzinfo is not None and text.html is None
    assert [(a.name, a.content_type, a.size) for a in upload.attachments] == [
        ("shot.png", "image/png", 1234)
    ]
    assert upload.links[0].startswith(f"{rc.base_url}/file-upload/")
    rc.mark_read(dm, me)
    rc.add_message(dm, bob, "after reading")
    cursor = DmCursor(datetime.now(UTC) - timedelta(hours=1)).dump()
    items = (await src.poll("dms", cursor)).items
    assert {i.text: i.unread for i in items} == {"PR: https://git.example.org/pr/1.": False,
                                                 "": False, "after reading": True}  # fmt: skip


async def test_a_busy_room_is_read_page_by_page(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    src = source(rc, me, session)
    cursor = (await src.poll("dms", None)).cursor
    sent = [rc.add_message(dm, bob, f"m{n}").id for n in range(250)]
    rc.requests.clear()
    result = await src.poll("dms", cursor)
    assert [i.id for i in result.items] == sent
    assert len(rc.requests_to("dm.history")) == 3


async def test_a_room_gone_between_the_two_calls_is_skipped(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    rc.add_message(dm, bob, "hello")
    rc.inject("status", status=400, path="dm.history", errorType="error-room-not-found",
              error="The required \"roomId\" param provided does not match any DM")  # fmt: skip
    result = await source(rc, me, session).poll("dms", None)
    assert result.items == []


async def test_a_subscription_with_a_garbled_rid_fails_the_poll_and_loses_nothing(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    """Found by `make proof` (faults): a ``rid`` given as an object was asked for as the
    room "{'id': …}", found gone, and the cursor moved past the DM's change: the message
    was only found with the room's next message. Now the poll fails and changes nothing."""
    src = source(rc, me, session)
    first = await src.poll("dms", None)
    rc.add_message(dm, bob, "during")
    rc.inject("rewrite", path="subscriptions.get", fn=lambda data: {
        **data, "update": [{**s, "rid": {"id": s["rid"]}} for s in data["update"]]})  # fmt: skip
    with pytest.raises(TransientError, match="rid"):
        await src.poll("dms", first.cursor)
    assert texts((await src.poll("dms", first.cursor)).items) == ["during"]


def test_the_cursor_stays_small() -> None:
    now = datetime.now(UTC)
    rooms = {f"room{n:04d}": now - timedelta(minutes=n) for n in range(1000)}
    text = DmCursor(now, frozenset({"s1"}), rooms).dump()
    assert len(json.loads(text)["rooms"]) == MAX_ROOMS and len(text) < 10_000
    assert DmCursor.load("not json") == DmCursor()


@pytest.mark.parametrize(
    "value",
    ["2025-01-15T10:30:00.000Z", "2025-01-15T10:30:00Z", "2025-01-15T10:30:00+00:00",
     {"$date": 1736937000000}, 1736937000000],
)  # fmt: skip
def test_times_in_iso_and_ejson(value: Any) -> None:
    assert parse_time(value) == datetime(2025, 1, 15, 10, 30, tzinfo=UTC)


# Actions.


async def test_mark_read_marks_each_room_once(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    group = rc.direct(me, bob, rc.add_user("carol"))
    for text in ("a", "b"):
        rc.add_message(dm, bob, text)
    rc.add_message(group, "carol", "c")
    src = source(rc, me, session)
    items = (await src.poll("dms", None)).items
    await src.act("mark_read", {}, items)
    assert len(rc.requests_to("subscriptions.read")) == 2
    assert rc.subscription(dm, me).unread == 0 and not rc.subscription(group, me).alert


async def test_reply_in_the_room_and_in_the_thread(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    parent = rc.add_message(dm, me, "question")
    plain = rc.add_message(dm, bob, "plain")
    threaded = rc.add_message(dm, bob, "threaded", tmid=parent.id)
    src = source(rc, me, session)
    items = {i.id: i for i in (await src.poll("dms", None)).items}
    await src.act("reply", {"message": "thanks!"}, [items[plain.id], items[threaded.id]])
    replies = [m for m in rc.messages.values() if m.text == "thanks!"]
    assert [(m.user.id, m.tmid) for m in replies] == [(me.id, None), (me.id, parent.id)]
    with pytest.raises(PermanentError, match="needs a message"):
        await src.act("reply", {}, [items[plain.id]])


# Auth.


async def test_password_login_and_one_relogin_when_the_token_is_refused(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    rc.add_message(dm, bob, "hi")
    src = login_source(rc, me, session)
    first = await src.poll("dms", None)
    assert texts(first.items) == ["hi"] and len(rc.requests_to("login")) == 1
    me.tokens.discard(src.auth_token or "")  # the session token expired
    await src.poll("dms", first.cursor)
    assert len(rc.requests_to("login")) == 2
    assert [r.status for r in rc.requests_to("subscriptions.get")] == [200, 401, 200]


async def test_a_refused_login_is_an_auth_error_and_no_loop(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession
) -> None:
    src = login_source(rc, me, session, password="wrong")
    with pytest.raises(AuthError, match="Unauthorized") as info:
        await src.poll("dms", None)
    assert "wrong" not in str(info.value)
    assert len(rc.requests_to("login")) == 1 and rc.requests_to("subscriptions.get") == []


async def test_a_token_refused_right_after_login_is_not_retried(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession
) -> None:
    src = login_source(rc, me, session)
    await src.poll("dms", None)
    rc.inject("status", status=401, count=2, path="subscriptions.get",
              error="You must be logged in to do this.")  # fmt: skip
    with pytest.raises(AuthError):
        await src.poll("dms", None)
    assert len(rc.requests_to("login")) == 2  # the first login, then one re-login


@pytest.mark.parametrize("version", ["7.10.0", "8.0.0"])
async def test_401_of_every_server_version_is_an_auth_error(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession, version: str
) -> None:
    rc.version = version
    src = source(rc, me, session)
    rc.revoke(me)
    with pytest.raises(AuthError, match="You must be logged in") as info:
        await src.poll("dms", None)
    assert me.token not in str(info.value) and info.value.status == 401


async def test_two_factor_is_an_auth_error(
    rc: RocketChatSim, session: aiohttp.ClientSession
) -> None:
    carol = rc.add_user("carol", password="pw", two_factor=True)
    with pytest.raises(AuthError, match="totp-required"):
        await login_source(rc, carol, session, password="pw").poll("dms", None)


# Errors and rate limits.


@pytest.mark.parametrize(
    ("error_type", "error"),
    [
        ("error-invalid-user", PermanentError),
        ("invalid-params", PermanentError),
        ("too-many-requests", TransientError),
        ("totp-required", AuthError),
    ],
)
async def test_400_error_types(
    rc: RocketChatSim,
    me: SimUser,
    session: aiohttp.ClientSession,
    error_type: str,
    error: type[Exception],
) -> None:
    rc.inject("status", status=400, errorType=error_type, error="Refused")
    with pytest.raises(error, match=error_type):
        await source(rc, me, session).poll("dms", None)


async def test_429_retry_after_comes_from_the_reset_in_milliseconds(
    me: SimUser, session: aiohttp.ClientSession
) -> None:
    async with RocketChatSim(rate_limit=1) as strict:
        me = strict.add_user("alice")
        src = source(strict, me, session)
        await src.poll("dms", None)
        with pytest.raises(TransientError) as info:
            await src.poll("dms", None)
    assert info.value.status == 429 and "too-many-requests" in str(info.value)
    assert info.value.retry_after is not None and 55 < info.value.retry_after <= 60


async def test_a_retry_after_wins_over_the_default_minute(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession
) -> None:
    """Found by `make proof` (faults): a 429 with ``Retry-After: 3`` and no
    ``X-RateLimit-Reset`` (a proxy's) made the feed rest 60 s; now the 3 s it names."""
    rc.inject("status", status=429, headers={"Retry-After": "3"})
    with pytest.raises(TransientError) as info:
        await source(rc, me, session).poll("dms", None)
    assert info.value.retry_after == 3.0


async def test_the_client_keeps_to_10_calls_per_route_per_minute(
    session: aiohttp.ClientSession,
) -> None:
    async with RocketChatSim() as real:  # the server default: 10 per 60 s
        me = real.add_user("alice")
        src = source(real, me, session, rate=10)
        cursor = None
        for _ in range(10):
            cursor = (await src.poll("dms", cursor)).cursor
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(src.poll("dms", cursor), timeout=0.5)  # held back, not sent
    assert real.max_requests_in_window(60.0, "subscriptions.get") == 10
    assert all(r.status == 200 for r in real.requests)


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("status", {"status": 500}),
        ("status", {"status": 503}),
        ("html", {}),
        ("truncated", {}),
        ("reset", {}),
        ("rate_limited", {}),
        ("latency", {"seconds": 3.0}),
    ],
)
async def test_faults_become_transient_errors(
    rc: RocketChatSim,
    me: SimUser,
    bob: SimUser,
    dm: SimRoom,
    session: aiohttp.ClientSession,
    fault: str,
    params: dict[str, Any],
) -> None:
    rc.add_message(dm, bob, "hello")
    rc.inject(fault, path="dm.history", **params)
    with pytest.raises(TransientError) as info:
        await source(rc, me, session).poll("dms", None)
    assert me.token not in str(info.value)


# The whole pipeline.

RULES = """\
- name: dm
  when: {kind: chat, unread: true}
  notify: [{sink: hooks, title: "{{ item.sender }}", message: "{{ item.text }}"}]
  then: [mark_read]
"""


async def test_the_pipeline_notifies_once_marks_read_and_survives_faults(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, tmp_path: Path
) -> None:
    hook = HookReceiver()
    await hook.start()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "inboxbot.yaml").write_text(f"""\
accounts:
  work:
    type: rocketchat
    base_url: {rc.base_url}
    user_id: {me.id}
    token: {me.token}
    rate: 100000
    timeout: 2s
sinks:
  hooks: {{type: webhook, url: "{hook.url}"}}
rules: [rules.yaml]
templates: []
backlog: notify
""")
    feed = Feed("work", "dms", timedelta(seconds=1), None)
    rc.add_message(dm, bob, "one")
    try:
        async with running(load(tmp_path / "inboxbot.yaml"), tmp_path / "state.db") as pipe:
            rc.inject("status", status=502, path="dm.history")
            with pytest.raises(RemoteError):
                await pipe.poll(feed)
            assert pipe.store.cursor(feed.key) == (False, None) and hook.received == []
            pipe.clock.time = lambda: time.time() + 3600  # type: ignore[method-assign]
            assert await pipe.poll(feed) == 1
            await pipe.flush()
            rc.add_message(dm, bob, "two")
            rc.inject("truncated", path="dm.history")
            with pytest.raises(RemoteError):
                await pipe.poll(feed)
            pipe.clock.time = lambda: time.time() + 7200  # type: ignore[method-assign]
            assert await pipe.poll(feed) == 1
            assert await pipe.poll(feed) == 0
            await pipe.flush()
    finally:
        await hook.stop()
    assert [b["message"] for b in hook.received] == ["one", "two"]
    assert rc.subscription(dm, me).unread == 0


async def test_the_chat_template_renders_room_thread_and_group_items(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    parent = rc.add_message(dm, me, "plan?")
    rc.add_message(dm, bob, "see the doc", file=("plan.pdf", "application/pdf", 10))
    rc.add_message(dm, bob, "agreed", tmid=parent.id)
    rc.add_message(rc.direct(me, bob, rc.add_user("carol", "Carol Chen")), "carol", "lunch?")
    items = (await source(rc, me, session).poll("dms", None)).items
    renderer = Renderer([TEMPLATES])
    template, now = renderer.load("chat"), datetime.now(UTC)
    rendered = [template.render(renderer.context(i, now=now, rule="r", extract={})) for i in items]
    assert [title for title, _ in rendered] == [
        "Bob Builder", "Bob Builder (thread)", "Carol Chen in Bob Builder, Carol Chen"]  # fmt: skip
    assert rendered[0][1] == "see the doc\n📎 plan.pdf" and rendered[2][1] == "lunch?"
