"""Rocket.Chat's realtime stream against the simulator's DDP WebSocket: ``watch`` wakes
the feed's poll (run here as the daemon runs it: on every wake, into a real store), after
every (re)connect and on every DM change; drops, refused logins, servers without it."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.errors import RemoteError
from bot.http import Limiters
from bot.sim.rocketchat import RocketChatSim, SimRoom, SimUser
from bot.sources import ddp
from bot.sources.rocketchat import RocketChatAccount, RocketChatSource
from bot.store import Store
from tests.sim.shared import TickingClock

FEED = "work/dms"


def source(
    base_url: str, session: aiohttp.ClientSession, auth: dict[str, str], **over: Any
) -> RocketChatSource:
    config = RocketChatAccount.model_validate(
        {"type": "rocketchat", "base_url": base_url, "timeout": "2s", "rate": 100_000,
         "realtime": True, **auth, **over}
    )  # fmt: skip
    return RocketChatSource("work", config, session, Limiters())


class Daemon:
    """What the daemon does with a pushing feed: ``watch`` in a task, and a poll into the
    store after every wake (no timer: whatever is found was pushed)."""

    def __init__(self, src: RocketChatSource, store: Store) -> None:
        self.src, self.store = src, store
        self.wakes: list[float] = []
        self.reports: list[tuple[bool, str]] = []
        self.found: dict[str, float] = {}  # item id → when its poll stored it
        self.new_per_poll: list[list[str]] = []
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self.wakes.append(time.monotonic())
        self._woken.set()

    def report(self, connected: bool, what: str) -> None:
        self.reports.append((connected, what))

    async def poll_when_woken(self) -> None:
        while True:
            await self._woken.wait()
            self._woken.clear()
            _, cursor = self.store.cursor(FEED)
            try:
                result = await self.src.poll("dms", cursor, lambda i: self.store.known(FEED, i))
            except RemoteError:  # the daemon polls again later; here: at the next wake
                continue
            fresh = self.store.known(FEED, [i.id for i in result.items])
            new = [i.id for i in result.items if i.id not in fresh]
            self.store.record_poll(FEED, result.items, result.cursor, now=time.time(), skip=False)
            self.found.update(dict.fromkeys(new, time.monotonic()))
            self.new_per_poll.append(new)

    async def __aenter__(self) -> Daemon:
        watch = self.src.watch("dms", self.wake, self.report)
        self._tasks = [asyncio.create_task(watch), asyncio.create_task(self.poll_when_woken())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with pytest.raises(asyncio.CancelledError):
                await task  # watch ends only by CancelledError


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def connected(d: Daemon) -> bool:
    return bool(d.reports) and d.reports[-1][0]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


# Pushed while connected.


async def test_pushed_messages_become_items_within_a_second(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, store: Store,
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    auth = {"user_id": me.id, "token": me.token}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: connected(d) and len(d.new_per_poll) == 1)  # the catch-up poll
        assert d.reports == [(True, "realtime stream")]
        latencies = []
        for n in range(30):
            posted = time.monotonic()
            mid = rc.add_message(dm, bob, f"message {n}").id
            await until(lambda mid=mid: mid in d.found)  # type: ignore[misc]
            latencies.append(d.found[mid] - posted)
    assert len(d.found) == 30 and sorted(map(len, d.new_per_poll))[-1] == 1
    p50, worst = statistics.median(latencies), max(latencies)
    print(f"\nrealtime: message posted → item stored: p50 {p50 * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms over {len(latencies)}")  # fmt: skip
    assert worst < 1.0


async def test_only_unread_dm_changes_wake_the_poll(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, store: Store,
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    auth = {"user_id": me.id, "token": me.token}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: connected(d) and len(d.new_per_poll) == 1)
        rc.add_message(rc.channel("general", me, bob), bob, "channel chatter")
        rc.mark_read(dm, me)  # what mark_read does: the user's own read
        rc.add_message(dm, me, "my own message")
        await asyncio.sleep(0.2)
        assert len(d.wakes) == 1
        first = rc.add_message(dm, bob, "a DM").id
        await until(lambda: first in d.found)
        mine = rc.add_message(dm, me, "a question of mine").id
        reply = rc.add_message(dm, bob, "in its thread", tmid=mine).id
        await until(lambda: reply in d.found)  # a reply in a thread the user follows: tunread


# Drops.


async def test_a_dropped_socket_while_messages_arrive_loses_none_and_repeats_none(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, store: Store,
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    auth = {"user_id": me.id, "token": me.token}
    posted: list[str] = []

    stop = asyncio.Event()

    async def post_steadily() -> None:
        while not stop.is_set():
            posted.append(rc.add_message(dm, bob, f"message {len(posted)}").id)
            await asyncio.sleep(0.02)

    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: connected(d))
        poster = asyncio.create_task(post_steadily())
        for _ in range(3):
            await asyncio.sleep(0.25)
            rc.drop_sockets()
            await until(lambda: not connected(d))
            down_at = len(posted)
            await until(lambda: connected(d))
            assert len(posted) > down_at  # messages arrived while it was down
        await asyncio.sleep(0.1)
        stop.set()
        await poster
        await until(lambda: set(posted) <= set(d.found))
    everything = [i for new in d.new_per_poll for i in new]
    assert sorted(everything) == sorted(posted)  # all of them, none twice
    assert rc.stream.connects == 4
    drops = [r for r in d.reports if not r[0]]
    assert len(drops) == 3 and all(r[1].startswith("realtime stream down: ") for r in drops)


async def test_a_server_down_for_a_while_is_caught_up_on_when_back(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, store: Store,
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    auth = {"user_id": me.id, "token": me.token}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: connected(d) and len(d.new_per_poll) == 1)
        rc.set_down(True)  # a restart: sockets cut, the upgrade answered 503 meanwhile
        await until(lambda: (False, "realtime stream down: HTTP 503 on the WebSocket upgrade")
                    in d.reports)  # fmt: skip
        while_down = [rc.add_message(dm, bob, f"while down {n}").id for n in range(3)]
        rc.set_down(False)
        await until(lambda: set(while_down) <= set(d.found))
    assert d.reports[-1] == (True, "realtime stream")


async def test_a_revoked_session_logs_in_again_with_the_password(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, store: Store,
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    auth = {"username": "alice", "password": "wonderland"}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: connected(d) and len(d.new_per_poll) == 1)
        rc.revoke(me)  # logged out everywhere: the server closes the socket too
        await until(lambda: not connected(d))
        await until(lambda: connected(d))
        mid = rc.add_message(dm, bob, "after the new login").id
        await until(lambda: mid in d.found)
    assert [ok for _, ok in rc.stream.logins] == [True, False, True]


# Refused logins, servers without the stream.


async def test_a_refused_login_is_reported_once_and_not_retried_soon(
    rc: RocketChatSim, me: SimUser, store: Store, session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, "inboxbot")
    auth = {"user_id": me.id, "token": "not-the-token-0123456789"}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: bool(d.reports))
        await asyncio.sleep(1.0)
    reason = "You've been logged out by the server. Please log in again."
    assert d.reports == [(False, f"login refused: {reason}")]
    assert rc.stream.connects == 1 and d.wakes == []
    assert "login refused" in caplog.text and "not-the-token" not in caplog.text + repr(d.reports)


async def test_a_wrong_password_is_a_refused_login(
    rc: RocketChatSim, me: SimUser, store: Store, session: aiohttp.ClientSession
) -> None:
    auth = {"username": "alice", "password": "looking-glass"}
    async with Daemon(source(rc.base_url, session, auth), store) as d:
        await until(lambda: bool(d.reports))
        await asyncio.sleep(0.3)
    [(ok, what)] = d.reports
    assert not ok and what.startswith("login refused: work: POST /api/v1/login → HTTP 401")
    assert "looking-glass" not in what and rc.stream.connects == 0


async def test_a_server_without_the_stream_is_polled_and_said_so_once(
    session: aiohttp.ClientSession, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "inboxbot")
    async with RocketChatSim(realtime=False, clock=TickingClock()) as bare:
        alice = bare.add_user("alice")
        room = bare.direct(alice, bare.add_user("bob"))
        src = source(bare.base_url, session, {"user_id": alice.id, "token": alice.token})
        async with Daemon(src, store) as d:
            await until(lambda: bool(d.reports))
            await asyncio.sleep(1.0)
        bare.add_message(room, "bob", "still polled")
        result = await src.poll("dms", None)
    why = "server has no realtime stream (HTTP 404 on the WebSocket upgrade): polling every 1m"
    assert d.reports == [(False, why)] and d.wakes == []
    assert [r.status for r in bare.requests if r.path == "/websocket"] == [404]
    # reported once: the daemon logs each report; the source adds no line of its own
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert [i.text for i in result.items] == ["still polled"]


async def test_a_websocket_that_does_not_speak_ddp_is_no_stream(
    session: aiohttp.ClientSession, store: Store
) -> None:
    async with SilentWebSocket(answer_connect=False) as url:
        src = source(url, session, {"user_id": "u1", "token": "t1"}, timeout="0.3s")
        async with Daemon(src, store) as d:
            await until(lambda: bool(d.reports))
    [(ok, what)] = d.reports
    assert not ok and what.startswith("server has no realtime stream (no DDP answer")


async def test_watch_stops_at_once_when_cancelled_mid_login(
    session: aiohttp.ClientSession, store: Store
) -> None:
    async with SilentWebSocket(answer_connect=True) as url:
        src = source(url, session, {"user_id": "u1", "token": "t1"}, timeout="30s")
        daemon = Daemon(src, store)
        await daemon.__aenter__()
        await asyncio.sleep(0.2)  # logging in, and never answered
        started = time.monotonic()
        await daemon.__aexit__()
    assert time.monotonic() - started < 1.5 and daemon.reports == []


# The DDP client itself: pings both ways.


async def test_the_server_s_pings_are_answered(
    rc: RocketChatSim, me: SimUser, store: Store, session: aiohttp.ClientSession
) -> None:
    rc.stream.ping_every = 0.05
    async with Daemon(source(rc.base_url, session, {"user_id": me.id, "token": me.token}), store):
        await until(lambda: rc.stream.pongs >= 3)


async def test_a_peer_that_stops_answering_is_dropped(session: aiohttp.ClientSession) -> None:
    async with (
        SilentWebSocket(answer_connect=True) as url,
        ddp.connect(session, f"{url}/websocket", within=1, ping_every=0.1) as conn,
    ):
        started = time.monotonic()
        with pytest.raises(ddp.Dropped, match="no answer to a ping"):
            async for _ in conn.events():
                pass
    assert time.monotonic() - started < 1.0


async def test_a_call_without_an_answer_is_a_drop(session: aiohttp.ClientSession) -> None:
    async with (
        SilentWebSocket(answer_connect=True) as url,
        ddp.connect(session, f"{url}/websocket", within=0.2) as conn,
    ):
        with pytest.raises(ddp.Dropped, match=r"no answer to login within 0\.2 s"):
            await conn.call("login", [{"resume": "t"}])


async def test_our_pings_keep_a_quiet_connection(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession
) -> None:
    async with ddp.connect(session, f"{rc.base_url}/websocket", within=1, ping_every=0.05) as c:
        await asyncio.sleep(0.3)  # six silent intervals: pinged, answered
        result = await c.call("login", [{"resume": me.token}])
    assert result["id"] == me.id and result["type"] == "resume"
    assert isinstance(result["tokenExpires"]["$date"], int)


# The simulator speaks like the server.


async def test_the_simulator_refuses_a_token_as_the_server_does(
    rc: RocketChatSim, me: SimUser, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{rc.base_url}/websocket") as ws:
        assert await ws.receive_json() == {"server_id": "0"}
        await ws.send_json({"msg": "connect", "version": "1", "support": ["1"]})
        assert (await ws.receive_json())["msg"] == "connected"
        login = {"msg": "method", "method": "login", "id": "7", "params": [{"resume": "x"}]}
        await ws.send_json(login)
        assert await ws.receive_json() == {"msg": "result", "id": "7", "error": {
            "isClientSafe": True, "error": 403,
            "reason": "You've been logged out by the server. Please log in again.",
            "message": "You've been logged out by the server. Please log in again. [403]",
            "errorType": "Meteor.Error"}}  # fmt: skip
        sub = {"msg": "sub", "id": "8", "name": "stream-notify-user",
               "params": [f"{me.id}/subscriptions-changed", False]}  # fmt: skip
        await ws.send_json(sub)
        assert await ws.receive_json() == {"msg": "nosub", "id": "8"}  # not logged in


async def test_subscription_changes_carry_ejson_dates(
    rc: RocketChatSim, me: SimUser, bob: SimUser, dm: SimRoom, session: aiohttp.ClientSession
) -> None:
    async with ddp.connect(session, f"{rc.base_url}/websocket", within=1) as conn:
        await conn.call("login", [{"resume": me.token}])
        await conn.subscribe("stream-notify-user", [f"{me.id}/subscriptions-changed", False])
        rc.add_message(dm, bob, "hello")
        event = await anext(aiter(conn.events()))
    assert event["collection"] == "stream-notify-user"
    action, sub = event["fields"]["args"]
    assert event["fields"]["eventName"] == f"{me.id}/subscriptions-changed"
    assert action == "updated" and sub["rid"] == dm.id and sub["unread"] == 1
    assert isinstance(sub["_updatedAt"]["$date"], int)


class _Silent:
    def __init__(self, answer_connect: bool) -> None:
        self.answer_connect = answer_connect

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        async for frame in ws:
            if self.answer_connect and json.loads(frame.data).get("msg") == "connect":
                await ws.send_json({"msg": "connected", "session": "s"})
        return ws


class SilentWebSocket:
    """A WebSocket at ``/websocket`` that answers nothing (``answer_connect``: but the
    handshake): a proxy to something else, a peer that died without closing."""

    def __init__(self, *, answer_connect: bool) -> None:
        self.app = web.Application()
        self.app.router.add_get("/websocket", _Silent(answer_connect).handle)

    async def __aenter__(self) -> str:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
