"""The Rocket.Chat simulator, driven over real HTTP the way a client sees it."""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.sim.rocketchat import RocketChatSim, SimRoom, SimUser, demo, iso
from tests.sim.shared import FakeClock, TickingClock, call

LEGACY_401 = {
    "success": False,
    "error": "You must be logged in to do this.",
    "status": "error",
    "message": "You must be logged in to do this.",
}


@pytest.fixture
async def rc() -> AsyncIterator[RocketChatSim]:
    async with RocketChatSim(rate_limit=1000, clock=TickingClock()) as simulator:
        yield simulator


@pytest.fixture
def alice(rc: RocketChatSim) -> SimUser:
    return rc.add_user("alice", "Alice Liddell", password="wonderland")


@pytest.fixture
def bob(rc: RocketChatSim) -> SimUser:
    return rc.add_user("bob", "Bob Builder")


@pytest.fixture
async def http(rc: RocketChatSim, alice: SimUser) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"X-User-Id": alice.id, "X-Auth-Token": alice.token}
    async with aiohttp.ClientSession(rc.base_url, headers=headers) as session:
        yield session


async def get(session: aiohttp.ClientSession, route: str, **params: str) -> tuple[int, Any]:
    return await call(session, "GET", f"/api/v1/{route}", params=params)


def history_ids(body: dict[str, Any]) -> list[str]:
    return [m["_id"] for m in body["messages"]]


# Authentication.


async def test_a_personal_access_token_authenticates(http: aiohttp.ClientSession) -> None:
    status, body = await get(http, "me")
    assert status == 200 and body["username"] == "alice" and body["success"] is True


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("7.10.0", LEGACY_401),
        ("8.0.0", {"success": False, "error": "You must be logged in to do this."}),
    ],
)
async def test_401_bodies_differ_before_and_after_8(
    version: str, expected: dict[str, Any], alice: SimUser, rc: RocketChatSim
) -> None:
    rc.version = version
    headers = {"X-User-Id": alice.id, "X-Auth-Token": "wrong"}
    async with aiohttp.ClientSession(rc.base_url, headers=headers) as session:
        assert await get(session, "subscriptions.get") == (401, expected)
    async with aiohttp.ClientSession(rc.base_url) as session:
        assert await get(session, "dm.list") == (401, expected)


async def test_password_login_gives_a_working_token(rc: RocketChatSim, alice: SimUser) -> None:
    async with aiohttp.ClientSession(rc.base_url) as session:
        body = {"user": "alice", "password": "wonderland"}
        status, login = await call(session, "POST", "/api/v1/login", json=body)
        assert status == 200 and login["status"] == "success" and login["success"] is True
        data = login["data"]
        assert data["userId"] == alice.id and data["me"]["username"] == "alice"
        headers = {"X-User-Id": data["userId"], "X-Auth-Token": data["authToken"]}
        assert (await get(session, "me", **{}))[0] == 401
        async with session.get("/api/v1/me", headers=headers) as resp:
            assert resp.status == 200
        rc.revoke(alice)
        async with session.get("/api/v1/me", headers=headers) as resp:
            assert resp.status == 401


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("7.10.0", {"success": False, "error": "Unauthorized", "status": "error",
                    "message": "Unauthorized"}),
        ("8.2.1", {"success": False, "error": "unauthorized"}),
    ],
)  # fmt: skip
async def test_a_refused_login(
    rc: RocketChatSim, alice: SimUser, version: str, expected: dict[str, Any]
) -> None:
    rc.version = version
    async with aiohttp.ClientSession(rc.base_url) as session:
        body = {"user": "alice", "password": "nope"}
        assert await call(session, "POST", "/api/v1/login", json=body) == (401, expected)


async def test_two_factor_users_need_a_code(rc: RocketChatSim) -> None:
    rc.add_user("carol", password="pw", two_factor=True)
    async with aiohttp.ClientSession(rc.base_url) as session:
        login = {"user": "carol", "password": "pw"}
        status, body = await call(session, "POST", "/api/v1/login", json=login)
        assert status == 401 and body["error"] == "totp-required"
        status, _ = await call(session, "POST", "/api/v1/login", json={**login, "code": "123456"})
        assert status == 200


# Rooms and subscriptions.


async def test_a_1to1_dm_id_is_both_user_ids_sorted(
    rc: RocketChatSim, alice: SimUser, bob: SimUser
) -> None:
    room = rc.direct(alice, bob)
    assert room.id == "".join(sorted([alice.id, bob.id]))
    assert rc.direct(bob, "alice") is room
    assert rc.subscription(room, alice).name == "bob"
    assert rc.subscription(room, bob).fname == "Alice Liddell"


async def test_a_group_dm_names_the_others(rc: RocketChatSim, alice: SimUser, bob: SimUser) -> None:
    carol = rc.add_user("carol", "Carol C")
    room = rc.direct(alice, bob, carol)
    assert len(room.id) == 24 and room.t == "d"
    assert rc.subscription(room, alice).name == "bob, carol"
    assert rc.subscription(room, alice).fname == "Bob Builder, Carol C"


async def test_subscriptions_get_and_updated_since(
    rc: RocketChatSim, http: aiohttp.ClientSession, alice: SimUser, bob: SimUser
) -> None:
    dm = rc.direct(alice, bob)
    rc.channel("general", alice, bob)
    status, body = await get(http, "subscriptions.get")
    assert status == 200 and body["remove"] == []
    assert sorted(s["t"] for s in body["update"]) == ["c", "d"]
    since = max(s["_updatedAt"] for s in body["update"])
    rc.clock = lambda: 4_000_000_000.0
    rc.add_message(dm, bob, "ping")
    _, later = await get(http, "subscriptions.get", updatedSince=since)
    (sub,) = later["update"]
    assert (sub["rid"], sub["unread"], sub["alert"], sub["name"]) == (dm.id, 1, True, "bob")
    assert sub["_updatedAt"] > since and sub["u"]["username"] == "alice"


async def test_an_invalid_updated_since_is_a_400_with_error_type(
    http: aiohttp.ClientSession,
) -> None:
    status, body = await get(http, "subscriptions.get", updatedSince="yesterday")
    assert status == 400 and body["errorType"] == "error-roomId-param-invalid"
    assert body["error"].endswith(" [error-roomId-param-invalid]")


async def test_subscriptions_read_clears_the_unread_state(
    rc: RocketChatSim, http: aiohttp.ClientSession, alice: SimUser, bob: SimUser
) -> None:
    dm = rc.direct(alice, bob)
    parent = rc.add_message(dm, alice, "question")
    rc.add_message(dm, bob, "answer", tmid=parent.id)
    rc.add_message(dm, bob, "and more")
    sub = rc.subscription(dm, alice)
    assert (sub.unread, sub.alert, sub.tunread) == (1, True, [parent.id])
    assert await call(http, "POST", "/api/v1/subscriptions.read", json={"rid": dm.id}) == (
        200, {"success": True})  # fmt: skip
    assert (sub.unread, sub.alert, sub.tunread) == (0, False, [])
    status, body = await call(http, "POST", "/api/v1/subscriptions.read", json={})
    assert status == 400 and body["errorType"] == "invalid-params"


async def test_a_thread_reply_tells_only_the_followers(
    rc: RocketChatSim, alice: SimUser, bob: SimUser
) -> None:
    carol = rc.add_user("carol")
    group = rc.direct(alice, bob, carol)
    parent = rc.add_message(group, bob, "thoughts?")
    before = rc.subscription(group, alice).updated_at
    rc.clock = lambda: 4_000_000_000.0
    rc.add_message(group, carol, "yes", tmid=parent.id)
    assert rc.subscription(group, bob).tunread == [parent.id]
    assert rc.subscription(group, alice).updated_at == before
    assert rc.messages[parent.id].json()["tcount"] == 1


# History.


@pytest.fixture
def room(rc: RocketChatSim, alice: SimUser, bob: SimUser) -> SimRoom:
    return rc.direct(alice, bob)


async def test_history_is_newest_first_and_count_is_capped(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, bob: SimUser
) -> None:
    ids = [rc.add_message(room, bob, f"m{i}").id for i in range(120)]
    _, body = await get(http, "dm.history", roomId=room.id)
    assert history_ids(body) == ids[::-1][:50]
    _, body = await get(http, "dm.history", roomId=room.id, count="500")
    assert len(body["messages"]) == 100
    _, body = await get(http, "im.history", roomId=room.id, count="0")
    assert len(body["messages"]) == 120


async def test_history_oldest_latest_and_inclusive(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, bob: SimUser
) -> None:
    base = 1_750_000_000.0
    msgs = []
    for n in range(5):
        rc.clock = lambda n=n: base + n  # type: ignore[misc]
        msgs.append(rc.add_message(room, bob, f"m{n}"))
    oldest, latest = iso(msgs[1].ts), iso(msgs[3].ts)
    _, body = await get(http, "dm.history", roomId=room.id, oldest=oldest, latest=latest)
    assert history_ids(body) == [msgs[2].id]
    _, body = await get(http, "dm.history", roomId=room.id, oldest=oldest, latest=latest,
                        inclusive="true")  # fmt: skip
    assert history_ids(body) == [msgs[3].id, msgs[2].id, msgs[1].id]
    _, body = await get(http, "dm.history", roomId=room.id, oldest=oldest, count="1",
                        unreads="true")  # fmt: skip
    # `latest` defaults to now, exclusive: m4, saved this very millisecond, is not listed
    assert history_ids(body) == [msgs[3].id]
    assert body["firstUnread"]["_id"] == msgs[2].id and body["unreadNotLoaded"] == 1


async def test_thread_replies_are_hidden_unless_asked_for(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, alice: SimUser, bob: SimUser
) -> None:
    parent = rc.add_message(room, alice, "parent")
    reply = rc.add_message(room, bob, "in thread", tmid=parent.id)
    shown = rc.add_message(room, bob, "also sent to the room", tmid=parent.id, tshow=True)
    _, body = await get(http, "dm.history", roomId=room.id)
    assert history_ids(body) == [shown.id, parent.id]
    _, body = await get(http, "dm.history", roomId=room.id, showThreadMessages="true")
    assert history_ids(body) == [shown.id, reply.id, parent.id]
    _, body = await get(http, "dm.messages", roomId=room.id)
    assert body["total"] == 3 and body["messages"][1]["tmid"] == parent.id


async def test_a_message_has_the_documented_shape(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, bob: SimUser
) -> None:
    rc.add_message(room, bob, "", file=("shot.png", "image/png", 1234))
    rc.add_message(room, bob, "see https://example.org/x")
    _, body = await get(http, "dm.history", roomId=room.id)
    text, upload = body["messages"]
    assert len(text["_id"]) == 17 and text["ts"].endswith("Z") and text["rid"] == room.id
    assert text["u"] == {"_id": bob.id, "username": "bob", "name": "Bob Builder"}
    assert text["urls"] == [{"url": "https://example.org/x"}]
    assert upload["files"][0]["name"] == "shot.png" and upload["file"]["size"] == 1234
    (attachment,) = upload["attachments"]
    assert attachment["title_link"].startswith("/file-upload/")
    assert attachment["image_type"] == "image/png"


async def test_room_errors_carry_an_error_type(
    rc: RocketChatSim, http: aiohttp.ClientSession, bob: SimUser
) -> None:
    status, body = await get(http, "dm.history", roomId="nope")
    assert status == 400 and body["errorType"] == "error-room-not-found"
    status, body = await get(http, "dm.history")
    assert status == 400 and body["errorType"] == "error-room-param-not-provided"
    other = rc.direct(bob, rc.add_user("dave"))
    status, body = await get(http, "dm.history", roomId=other.id)
    assert status == 403 and body["error"].endswith("[error-unauthorized]")
    rc.version = "8.0.0"
    status, body = await get(http, "dm.history", roomId=other.id)
    assert status == 403 and body["error"].endswith("[error-forbidden]")


async def test_dm_list_has_the_seed_page_shape(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, bob: SimUser
) -> None:
    rc.add_message(room, bob, "hello")
    status, body = await get(http, "dm.list")
    assert status == 200 and body["total"] == 1
    (im,) = body["ims"]
    assert im["_id"] == room.id and im["usernames"] == [rc.users[u].username for u in room.uids]
    assert im["lastMessage"]["msg"] == "hello" and im["msgs"] == 1


# Posting.


async def test_post_message_in_a_room_and_a_thread(
    rc: RocketChatSim, http: aiohttp.ClientSession, room: SimRoom, bob: SimUser
) -> None:
    parent = rc.add_message(room, bob, "can you look?")
    body = {"roomId": room.id, "text": "sure", "tmid": parent.id}
    status, answer = await call(http, "POST", "/api/v1/chat.postMessage", json=body)
    assert status == 200 and answer["success"] is True and isinstance(answer["ts"], int)
    assert answer["message"]["tmid"] == parent.id and answer["channel"] == room.id
    assert rc.subscription(room, bob).tunread == [parent.id]
    status, answer = await call(http, "POST", "/api/v1/chat.postMessage",
                                json={"channel": "@bob", "text": "direct"})  # fmt: skip
    assert status == 200 and answer["message"]["rid"] == room.id
    assert rc.subscription(room, bob).unread == 1  # a thread reply is counted in tunread
    status, answer = await call(http, "POST", "/api/v1/chat.postMessage",
                                json={"roomId": "missing", "text": "x"})  # fmt: skip
    assert status == 400 and answer["errorType"] == "invalid-channel"


# Rate limit.


async def test_ten_calls_per_route_per_minute_then_429(alice: SimUser) -> None:
    clock = FakeClock(1_750_000_000.0)
    sim = RocketChatSim(clock=clock)
    me = sim.add_user("me")
    async with sim:
        headers = {"X-User-Id": me.id, "X-Auth-Token": me.token}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
            for n in range(10):
                async with session.get("/api/v1/subscriptions.get") as resp:
                    assert resp.status == 200
                    assert resp.headers["X-RateLimit-Limit"] == "10"
                    assert resp.headers["X-RateLimit-Remaining"] == str(9 - n)
                    assert resp.headers["X-RateLimit-Reset"] == str(int((clock.value + 60) * 1000))
            clock.value += 20
            async with session.get("/api/v1/subscriptions.get") as resp:
                assert resp.status == 429
                assert await resp.json() == {"success": False, "error": (
                    "Error, too many requests. Please slow down. You must wait 40 seconds "
                    "before trying this endpoint again. [error-too-many-requests]")}  # fmt: skip
            assert (await get(session, "dm.list"))[0] == 200  # another route, another budget
            clock.value += 40
            assert (await get(session, "subscriptions.get"))[0] == 200
    assert sim.max_requests_in_window(60.0, "subscriptions.get") == 11


# Faults and control.


@pytest.mark.parametrize(
    ("kind", "params", "status"),
    [
        ("status", {"status": 500}, 500),
        ("status", {"status": 400, "errorType": "error-invalid-user"}, 400),
        ("html", {}, 502),
        ("rate_limited", {}, 429),
    ],
)
async def test_faults(
    rc: RocketChatSim, http: aiohttp.ClientSession, kind: str, params: dict[str, Any], status: int
) -> None:
    rc.inject(kind, path="subscriptions.get", **params)
    async with http.get("/api/v1/subscriptions.get") as resp:
        assert resp.status == status
        if kind == "rate_limited":
            assert int(resp.headers["X-RateLimit-Reset"]) > 1e12
        if "errorType" in params:
            assert (await resp.json())["errorType"] == "error-invalid-user"
    assert (await get(http, "subscriptions.get"))[0] == 200


async def test_truncated_reset_and_down(rc: RocketChatSim, http: aiohttp.ClientSession) -> None:
    rc.inject("truncated")
    async with http.get("/api/v1/subscriptions.get") as resp:
        with pytest.raises(ValueError):
            json.loads(await resp.read())
    rc.inject("reset")
    with pytest.raises(aiohttp.ClientError):
        await get(http, "subscriptions.get")
    rc.set_down(True)
    async with http.get("/api/v1/subscriptions.get") as resp:
        assert resp.status == 503 and "html" in resp.headers["Content-Type"]
    assert [r.status for r in rc.requests] == [200, 0, 503]


async def test_the_control_api(rc: RocketChatSim) -> None:
    async with aiohttp.ClientSession(rc.base_url) as ctl:
        _, eve = await call(ctl, "POST", "/_sim/users", json={"username": "eve", "name": "Eve"})
        await call(ctl, "POST", "/_sim/users", json={"username": "fay"})
        _, room = await call(ctl, "POST", "/_sim/rooms", json={"usernames": ["eve", "fay"]})
        message = {"rid": room["rid"], "from": "fay", "text": "hi eve",
                   "file": {"name": "a.pdf", "type": "application/pdf", "size": 10}}  # fmt: skip
        status, sent = await call(ctl, "POST", "/_sim/messages", json=message)
        assert status == 201 and rc.messages[sent["id"]].text == "hi eve"
        await call(ctl, "POST", "/_sim/faults", json={"kind": "status", "status": 503})
        headers = {"X-User-Id": eve["id"], "X-Auth-Token": eve["token"]}
        assert (await get(ctl, "me", **{}))[0] == 503
        async with ctl.get("/api/v1/me", headers=headers) as resp:
            assert resp.status == 200
        _, most = await call(ctl, "GET", "/_sim/requests/max_window?window=60&route=me")
        assert most == {"max": 2, "requests": 2}
        status, _ = await call(ctl, "POST", "/_sim/rooms", json={"usernames": ["nobody"]})
        assert status == 400


async def test_the_demo_announces_itself_and_keeps_messages_coming() -> None:
    async with demo(random.Random(7)) as new_message:
        url = os.environ["INBOXBOT_DEMO_ROCKETCHAT_URL"]
        headers = {"X-User-Id": os.environ["INBOXBOT_DEMO_ROCKETCHAT_USER_ID"],
                   "X-Auth-Token": os.environ["INBOXBOT_DEMO_ROCKETCHAT_TOKEN"]}  # fmt: skip
        async with aiohttp.ClientSession(url, headers=headers) as session:
            _, before = await get(session, "subscriptions.get")
            for _ in range(5):
                new_message()
            _, after = await get(session, "subscriptions.get")
    dms = [s for s in before["update"] if s["t"] == "d"]
    assert len(dms) == 3 and any(s["t"] == "c" for s in before["update"])
    unread = sum(s["unread"] + len(s["tunread"]) for s in after["update"] if s["t"] == "d")
    assert unread > sum(s["unread"] + len(s["tunread"]) for s in dms)
