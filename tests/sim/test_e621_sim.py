"""The e621 simulator, driven over real HTTP the way a client sees it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.sim.e621 import E621Sim, SimUser, demo
from tests.sim.shared import FakeClock

T0 = datetime(2025, 1, 15, 15, 30, tzinfo=UTC)  # 10:30 in New York (EST)
AGENT = {"User-Agent": "inboxbot-tests/1.0 (by alice on e621)"}


@pytest.fixture
async def site() -> AsyncIterator[E621Sim]:
    async with E621Sim(edge_rate=1000, now=lambda: T0) as simulator:
        yield simulator


@pytest.fixture
def alice(site: E621Sim) -> SimUser:
    return site.add_user("alice")


@pytest.fixture
def bob(site: E621Sim) -> SimUser:
    return site.add_user("bob")


def basic(user: SimUser, key: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{user.name}:{key or user.api_key}".encode()).decode()
    return {**AGENT, "Authorization": f"Basic {token}"}


@pytest.fixture
async def http(site: E621Sim, alice: SimUser) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(site.base_url, headers=basic(alice)) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    kwargs.setdefault("allow_redirects", False)
    async with session.request(method, path, **kwargs) as resp:
        body = await resp.read()
        if "json" in resp.headers.get("Content-Type", ""):
            return resp.status, json.loads(body)
        return resp.status, body.decode()


# --- the edge: User-Agent, rate limit, outages --------------------------------------------


@pytest.mark.parametrize(
    "agent",
    ["", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Python/3.11 aiohttp/3.9", "curl/8.0"],
)
async def test_the_edge_blocks_empty_browser_and_library_agents(
    site: E621Sim, alice: SimUser, agent: str
) -> None:
    headers = {**basic(alice), "User-Agent": agent}
    async with aiohttp.ClientSession(site.base_url, skip_auto_headers=["User-Agent"]) as s:
        status, body = await call(s, "GET", "/dmails.json", headers=headers)
    assert status == 403 and "<html>" in body and "User-Agent" in body


async def test_the_edge_answers_503_past_two_requests_a_second_counting_every_one(
    alice: SimUser,
) -> None:
    clock = FakeClock()
    async with E621Sim(clock=clock) as edge:
        edge.add_user("alice", api_key=alice.api_key)
        async with aiohttp.ClientSession(edge.base_url, headers=basic(alice)) as s:
            statuses = [(await call(s, "GET", "/dmails.json"))[0] for _ in range(3)]
            assert statuses == [200, 200, 503]
            clock.value += 0.6
            assert (await call(s, "GET", "/dmails.json"))[0] == 503  # still 3+ in the window
            clock.value += 1.01
            status, _ = await call(s, "GET", "/dmails.json")
    assert status == 200
    assert edge.max_requests_in_window(1.0) == 4 and edge.requests[2].status == 503
    assert edge.max_requests_in_window(1.0, user="alice") == 4


async def test_down_is_a_502_page(site: E621Sim, http: aiohttp.ClientSession) -> None:
    site.set_down(True)
    status, body = await call(http, "GET", "/dmails.json")
    assert status == 502 and "<html>" in body


# --- the app: authentication and error shapes ---------------------------------------------


async def test_auth_shapes(site: E621Sim, alice: SimUser) -> None:
    async with aiohttp.ClientSession(site.base_url, headers=AGENT) as anon:
        assert await call(anon, "GET", "/dmails.json") == (
            403,
            {"success": False, "reason": "Access Denied"},
        )
        status, _ = await call(anon, "GET", "/dmails")
        assert status == 302  # the HTML flavour sends to the login page
        failure = {
            "success": False,
            "message": "SessionLoader::AuthenticationFailure",
            "code": None,
        }
        assert await call(anon, "GET", "/dmails.json", headers=basic(alice, "nope")) == (
            401,
            failure,
        )
        params = {"login": "alice", "api_key": alice.api_key}
        assert await call(anon, "GET", "/dmails.json", params=params) == (200, [])
        alice.banned = "forever"
        status, body = await call(anon, "GET", "/dmails.json", params=params)
        assert (status, body["message"]) == (401, "Account is banned: forever")


async def test_not_found_and_other_owners(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    site.send_dmail(alice, bob, "hi", "x")
    bobs = next(d.id for d in site.dmails.values() if d.owner_id == bob.id)
    assert await call(http, "GET", "/dmails/1.json") == (
        404,
        {"success": False, "reason": "not found"},
    )
    assert await call(http, "PUT", f"/dmails/{bobs}/mark_as_read.json") == (
        403,
        {"success": False, "reason": "Access Denied"},
    )


async def test_the_write_throttle(alice: SimUser) -> None:
    clock = FakeClock()
    async with E621Sim(clock=clock, edge_rate=10_000) as app:
        me = app.add_user("alice", api_key=alice.api_key)
        async with aiohttp.ClientSession(app.base_url, headers=basic(me)) as s:
            for n in range(60):
                async with s.put("/dmails/mark_all_as_read.json") as resp:
                    assert resp.status == 204 and resp.headers["X-Api-Limit"] == str(59 - n)
            async with s.put("/dmails/mark_all_as_read.json") as resp:
                assert resp.status == 429 and resp.headers["X-Api-Limit"] == "0"
                assert await resp.json() == {
                    "success": False,
                    "message": "Throttled: Too many requests",
                    "code": None,
                }
            assert (await call(s, "GET", "/dmails.json"))[0] == 200  # reads never count
            clock.value += 60.1
            assert (await call(s, "PUT", "/dmails/mark_all_as_read.json"))[0] == 204


# --- pagination ---------------------------------------------------------------------------


async def test_cursors_and_pages(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    ids = [site.send_dmail(bob, alice, f"t{n}", "b") for n in range(10)]

    async def page(**params: str) -> list[int]:
        status, body = await call(http, "GET", "/dmails.json", params=params)
        assert status == 200
        return [d["id"] for d in body]

    assert await page() == ids[::-1]
    assert await page(page=f"a{ids[2]}", limit="3") == [ids[5], ids[4], ids[3]]  # closest, desc
    assert await page(page=f"b{ids[5]}", limit="2") == [ids[4], ids[3]]
    assert await page(page="2", limit="4") == [ids[5], ids[4], ids[3], ids[2]]
    assert await page(limit="0") == []
    assert await page(page=f"a{ids[-1]}") == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "321"}, "Limit must be between 0 and 320."),
        ({"limit": "ten"}, "Invalid limit."),
        ({"page": "0"}, "Invalid page number."),
        ({"page": "-1"}, "Invalid page number."),
        ({"page": "751"}, "You cannot go beyond page 750. Please narrow your search terms."),
        ({"page": "a2147483648"}, "Page parameter is out of valid range."),
    ],
)
async def test_bad_pages_are_410(
    http: aiohttp.ClientSession, params: dict[str, str], message: str
) -> None:
    for path in ("/dmails.json", "/comments.json"):
        assert await call(http, "GET", path, params=params) == (
            410,
            {"success": False, "message": message, "code": None},
        )


async def test_blank_search_params_redirect(http: aiohttp.ClientSession) -> None:
    async with http.get(
        "/dmails.json", params={"search[title_matches]": "", "limit": "5"}, allow_redirects=False
    ) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dmails.json?limit=5"


# --- DMails -------------------------------------------------------------------------------


async def test_each_dmail_is_stored_twice(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    received = site.send_dmail(bob, alice, "Hello", "from bob")
    site.send_dmail(alice, bob, "Re: Hello", "from alice")
    _, body = await call(http, "GET", "/dmails.json")
    assert [(d["owner_id"], d["from_id"], d["to_id"], d["is_read"]) for d in body] == [
        (alice.id, alice.id, bob.id, True),  # her own sent copy, read
        (alice.id, bob.id, alice.id, False),
    ]
    assert list(body[1]) == ["id", "owner_id", "from_id", "to_id", "title", "body", "is_read",
                             "is_deleted", "created_at", "updated_at", "to_name", "from_name"]  # fmt: skip
    assert body[1]["id"] == received and body[1]["from_name"] == "bob"
    _, only_received = await call(
        http, "GET", "/dmails.json", params={"search[to_id]": str(alice.id)}
    )
    assert [d["id"] for d in only_received] == [received]


async def test_time_zones(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    site.send_dmail(bob, alice, "winter", "x", created_at=T0)
    site.send_dmail(bob, alice, "summer", "x", created_at=T0 + timedelta(days=181))
    _, body = await call(http, "GET", "/dmails.json")
    assert [d["created_at"] for d in body] == [
        "2025-07-15T11:30:00.000-04:00",
        "2025-01-15T10:30:00.000-05:00",
    ]
    _, body = await call(http, "GET", "/dmails.json", params={"time_zone": "UTC"})
    assert body[1]["created_at"] == "2025-01-15T15:30:00.000+00:00"
    alice.time_zone = "Berlin"
    _, body = await call(http, "GET", "/dmails.json")
    assert body[1]["created_at"] == "2025-01-15T16:30:00.000+01:00"


async def test_json_writes_answer_204_and_html_302(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    one, two = (site.send_dmail(bob, alice, f"t{n}", "b") for n in range(2))
    status, shown = await call(http, "GET", f"/dmails/{one}.json")
    assert status == 200 and shown["is_read"] is False
    assert not site.dmails[one].is_read  # the JSON show does not mark read
    assert (await call(http, "GET", f"/dmails/{one}"))[0] == 200
    assert site.dmails[one].is_read  # the HTML view does
    assert await call(http, "PUT", f"/dmails/{two}/mark_as_read.json") == (204, "")
    status, body = await call(http, "PUT", f"/dmails/{two}/mark_as_unread")
    assert status == 302 and "redirected" in body and not site.dmails[two].is_read
    assert (await call(http, "DELETE", f"/dmails/{two}.json"))[0] == 204
    assert (await call(http, "DELETE", f"/dmails/{two}.json"))[0] == 204  # idempotent
    assert site.dmails[two].is_deleted and site.dmails[two].is_read
    _, body = await call(http, "GET", "/dmails.json")
    assert [d["id"] for d in body] == [one]
    _, shown = await call(http, "GET", f"/dmails/{two}.json")
    assert shown["is_deleted"] is True
    site.send_dmail(bob, alice, "t3", "b")
    assert (await call(http, "PUT", "/dmails/mark_all_as_read"))[0] == 302
    assert all(d.is_read for d in site.dmails.values() if d.owner_id == alice.id)


async def test_legacy_shapes(alice: SimUser) -> None:
    async with E621Sim(edge_rate=1000, legacy=True) as old:
        me, other = old.add_user("alice", api_key=alice.api_key), old.add_user("bob")
        async with aiohttp.ClientSession(old.base_url, headers=basic(me)) as s:
            assert await call(s, "GET", "/dmails.json") == (200, {"dmails": []})
            assert await call(s, "GET", "/comments.json") == (200, {"comments": []})
            old.send_dmail(other, me, "hi", "x")
            old.add_comment(old.add_post(me), other, "nice")
            _, (dmail,) = await call(s, "GET", "/dmails.json")
            _, (comment,) = await call(s, "GET", "/comments.json")
    assert "from_name" not in dmail and "to_name" not in dmail
    assert "vote" not in comment and comment["creator_name"] == "bob"


# --- comments -----------------------------------------------------------------------------


async def test_comment_visibility(site: E621Sim, alice: SimUser, bob: SimUser) -> None:
    mod = site.add_user("mod", level="moderator")
    post, closed = site.add_post(alice), site.add_post(alice, comments_disabled=True)
    shown = site.add_comment(post, bob, "fine")
    hidden_bob = site.add_comment(post, bob, "hidden", is_hidden=True)
    hidden_alice = site.add_comment(post, alice, "mine, hidden", is_hidden=True)
    low = site.add_comment(post, bob, "low", score=-5)
    sticky = site.add_comment(closed, mod, "sticky", is_sticky=True)
    site.add_comment(closed, bob, "in a closed section")

    async def visible(user: SimUser | None, **params: str) -> list[int]:
        headers = basic(user) if user else AGENT
        async with aiohttp.ClientSession(site.base_url, headers=headers) as s:
            _, body = await call(s, "GET", "/comments.json", params=params)
        return sorted(c["id"] for c in body)

    assert await visible(None) == sorted([shown, sticky])
    assert await visible(alice) == sorted([shown, sticky])
    alice.show_hidden_comments = True
    assert await visible(alice) == sorted([shown, hidden_alice, sticky])
    assert await visible(alice, **{"search[id]": str(low)}) == [low]  # searched by id
    alice.comment_threshold = -10
    assert low in await visible(alice)
    assert len(await visible(mod)) == 5  # staff see every hidden one; the threshold holds
    mod.comment_threshold = -10
    assert len(await visible(mod)) == 6
    async with aiohttp.ClientSession(site.base_url, headers=basic(alice)) as s:
        assert (await call(s, "GET", f"/comments/{hidden_bob}.json"))[0] == 403


async def test_comment_search_and_fields(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    mine, theirs = site.add_post(alice), site.add_post(bob)
    first = site.add_comment(mine, bob, "Great shading!", created_at=T0)
    site.add_comment(theirs, alice, "thanks")
    _, body = await call(http, "GET", "/comments.json", params={"search[poster_id]": str(alice.id)})
    (comment,) = body
    assert list(comment) == ["id", "created_at", "updated_at", "post_id", "creator_id", "body", "score",
                             "updater_id", "do_not_bump_post", "is_hidden", "is_sticky", "warning_type",
                             "warning_user_id", "creator_name", "updater_name", "vote"]  # fmt: skip
    assert (comment["id"], comment["created_at"], comment["vote"]) == (
        first,
        "2025-01-15T10:30:00.000-05:00",
        0,
    )
    for params in ({"search[creator_name]": "BOB"}, {"search[body_matches]": "shading"},
                   {"search[body_matches]": "great*"}, {"search[post_id]": f"{mine},1"},
                   {"search[poster_name]": "alice"}, {"search[unknown]": "x"}):  # fmt: skip
        _, found = await call(http, "GET", "/comments.json", params=params)
        assert first in [c["id"] for c in found], params


async def test_votes_toggle_unless_no_unvote(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    cid = site.add_comment(site.add_post(bob), bob, "hi", score=2)
    votes = f"/comments/{cid}/votes.json"
    assert await call(http, "POST", votes, data={"score": "1"}) == (
        200,
        {"score": 3, "our_score": 1},
    )
    assert await call(http, "POST", votes, data={"score": "1"}) == (
        200,
        {"score": 2, "our_score": 0},
    )
    assert await call(http, "POST", votes, data={"score": "-1"}) == (
        200,
        {"score": 1, "our_score": -1},
    )
    body = {"score": "-1", "no_unvote": "true"}
    assert await call(http, "POST", votes, data=body) == (200, {"score": 1, "our_score": -1})
    _, (listed,) = await call(http, "GET", "/comments.json")
    assert listed["vote"] == -1
    assert (await call(http, "DELETE", votes))[0] == 204
    assert site.comments[cid].score == 2 and (cid, alice.id) not in site.votes


@pytest.mark.parametrize(
    ("setup", "score", "message"),
    [
        ({}, "2", "Invalid vote"),
        ({"own": True}, "1", "Validation failed: You cannot vote on your own comments"),
        ({"is_sticky": True}, "1", "Validation failed: You cannot vote on sticky comments"),
        ({"locked": True}, "1", "Comment section is locked"),
        ({"disabled": True}, "1", "Comment section is disabled"),
        ({"vote_locked": True}, "1", "Vote is locked"),
    ],
)
async def test_refused_votes_are_422(
    site: E621Sim,
    alice: SimUser,
    bob: SimUser,
    http: aiohttp.ClientSession,
    setup: dict[str, bool],
    score: str,
    message: str,
) -> None:
    post = site.add_post(bob, comments_locked=setup.get("locked", False),
                         comments_disabled=setup.get("disabled", False))  # fmt: skip
    cid = site.add_comment(post, alice if setup.get("own") else bob, "x",
                           is_sticky=setup.get("is_sticky", False))  # fmt: skip
    if setup.get("vote_locked"):
        site.locked_votes.add((cid, alice.id))
    assert await call(http, "POST", f"/comments/{cid}/votes.json", data={"score": score}) == (
        422,
        {"success": False, "message": message, "code": None},
    )


async def test_create_hide_unhide(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    post = site.add_post(bob)
    status, made = await call(http, "POST", "/comments.json",
                              data={"comment[body]": "Lovely!", "comment[post_id]": str(post)})  # fmt: skip
    assert status == 201 and made["body"] == "Lovely!" and made["creator_name"] == "alice"
    status, json_made = await call(
        http, "POST", "/comments.json", json={"comment": {"body": "x", "post_id": post}}
    )
    assert status == 201 and json_made["post_id"] == post
    assert (
        await call(
            http, "POST", "/comments.json", data={"comment[body]": "x", "comment[post_id]": "1"}
        )
    )[0] == 422
    status, hidden = await call(http, "POST", f"/comments/{made['id']}/hide.json")
    assert status == 200 and hidden["is_hidden"] is True
    others = site.add_comment(post, bob, "bob's")
    assert (await call(http, "POST", f"/comments/{others}/hide.json"))[0] == 403
    unhide = f"/comments/{made['id']}/unhide.json"
    assert (await call(http, "POST", unhide))[0] == 403  # moderators only
    site.votes_disabled = True
    assert await call(http, "POST", f"/comments/{others}/votes.json", data={"score": "1"}) == (
        403,
        {"success": False, "reason": "Votes are disabled"},
    )


# --- users --------------------------------------------------------------------------------


async def test_users(
    site: E621Sim, alice: SimUser, bob: SimUser, http: aiohttp.ClientSession
) -> None:
    _, found = await call(http, "GET", "/users.json", params={"search[name_matches]": "Alice"})
    assert [u["id"] for u in found] == [alice.id]
    _, me = await call(http, "GET", f"/users/{alice.id}.json")
    site.send_dmail(bob, alice, "hi", "x")
    _, me = await call(http, "GET", f"/users/{alice.id}.json")
    assert (me["unread_dmail_count"], me["has_mail"], me["api_burst_limit"]) == (1, True, 60)
    assert me["time_zone"] == "Eastern Time (US & Canada)" and me["comment_threshold"] == -2
    _, other = await call(http, "GET", f"/users/{bob.id}.json")
    assert "unread_dmail_count" not in other and other["name"] == "bob"
    assert (await call(http, "GET", "/users/1.json"))[0] == 404


# --- faults and the control API -----------------------------------------------------------


async def test_faults(site: E621Sim, http: aiohttp.ClientSession) -> None:
    site.inject(
        "status", status=500, message="The database timed out running your query.", code="x1"
    )
    assert await call(http, "GET", "/dmails.json") == (
        500, {"success": False, "message": "The database timed out running your query.", "code": "x1"})  # fmt: skip
    site.inject("status", status=404, reason="not found")
    assert (await call(http, "GET", "/dmails.json"))[1] == {"success": False, "reason": "not found"}
    site.inject("html")
    status, body = await call(http, "GET", "/dmails.json")
    assert status == 502 and body.startswith("<!DOCTYPE html>")
    site.inject("rate_limited")
    assert (await call(http, "GET", "/dmails.json"))[0] == 503
    site.inject("throttled", method="PUT")
    assert (await call(http, "GET", "/dmails.json"))[0] == 200  # only PUTs match
    assert (await call(http, "PUT", "/dmails/mark_all_as_read.json"))[0] == 429
    site.inject("truncated")
    async with http.get("/dmails.json") as resp:
        with pytest.raises(ValueError):
            json.loads(await resp.read())
    site.inject("reset")
    with pytest.raises(aiohttp.ClientError):
        await call(http, "GET", "/dmails.json")
    assert site.requests[-1].status == 0
    with pytest.raises(ValueError):
        site.inject("nonsense")


async def test_control_api(site: E621Sim) -> None:
    async with aiohttp.ClientSession(site.base_url) as ctl:
        status, user = await call(
            ctl, "POST", "/_sim/users", json={"name": "carol", "time_zone": "UTC"}
        )
        assert status == 201 and len(user["api_key"]) == 24
        await call(ctl, "POST", "/_sim/users", json={"name": "dave"})
        status, made = await call(
            ctl,
            "POST",
            "/_sim/dmails",
            json={"from": "dave", "to": "carol", "title": "t", "body": "b"},
        )
        assert status == 201 and site.dmails[made["id"]].to_id == user["id"]
        _, post = await call(ctl, "POST", "/_sim/posts", json={"uploader": "carol"})
        _, comment = await call(
            ctl,
            "POST",
            "/_sim/comments",
            json={"post_id": post["id"], "creator": "dave", "body": "hi"},
        )
        assert site.comments[comment["id"]].body == "hi"
        status, seeded = await call(
            ctl, "POST", "/_sim/seed", json={"user": "carol", "dmails": 2, "comments": 3, "seed": 1}
        )
        assert status == 201 and (len(seeded["dmails"]), len(seeded["comments"])) == (2, 3)
        assert (await call(ctl, "POST", "/_sim/faults", json={"kind": "html", "count": 2}))[1] == {
            "queued": 1
        }
        assert (await call(ctl, "POST", "/_sim/down", json={"down": False}))[1] == {"down": False}
        assert (await call(ctl, "GET", "/_sim/requests/max_window"))[1] == {"max": 0, "requests": 0}
        assert (await call(ctl, "POST", "/_sim/users", json={"name": "carol"}))[0] == 400


async def test_demo_announces_itself_and_adds_items() -> None:
    async with demo(random.Random(7)) as add:
        url = os.environ["INBOXBOT_DEMO_E621_URL"]
        name, key = (
            os.environ["INBOXBOT_DEMO_E621_USERNAME"],
            os.environ["INBOXBOT_DEMO_E621_API_KEY"],
        )
        token = base64.b64encode(f"{name}:{key}".encode()).decode()
        headers = {**AGENT, "Authorization": f"Basic {token}"}
        async with aiohttp.ClientSession(url, headers=headers) as s:
            _, before = await call(s, "GET", "/dmails.json")
            poster = os.environ["INBOXBOT_DEMO_E621_USER_ID"]
            _, comments = await call(
                s, "GET", "/comments.json", params={"search[poster_id]": poster}
            )
            for _ in range(6):
                add()
            await asyncio.sleep(1.1)  # the real edge: 2 requests a second
            _, after = await call(s, "GET", "/dmails.json")
            _, comments_after = await call(
                s, "GET", "/comments.json", params={"search[poster_id]": poster}
            )
    assert len(before) == 4 and len(comments) == 3  # 3 received + 1 sent copy
    assert len(after) + len(comments_after) == 4 + 3 + 6
