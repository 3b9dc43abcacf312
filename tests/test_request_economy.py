"""Requests per cycle, per upstream, through the pipeline and its store against each
simulator (which counts them per kind): one request when nothing is new, whatever the
last page held; after an outage, paging goes back to the first known entry and loses and
repeats nothing. The README's request table states these numbers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import indent

import pytest

from bot.app import load, running
from bot.errors import RemoteError
from bot.pipeline import Pipeline
from bot.sim.base import SimServer
from bot.sim.e621 import E621Sim, SimUser
from bot.sim.minutemail import MinuteMailSim
from bot.sim.rocketchat import RocketChatSim
from bot.sim.webhook import HookReceiver
from bot.sources import SOURCES, Feed
from tests.conftest import Setup
from tests.sim.shared import TickingClock

RULES = """\
- name: every-item
  notify: [{sink: hooks, title: "{{ item.upstream }}|{{ item.subject }}", message: "{{ item.sender }}"}]
"""


def feed(account: str, name: str) -> Feed:
    return Feed(account, name, timedelta(seconds=1), None)


async def cycle(pipe: Pipeline, *feeds: Feed) -> int:
    added = sum([await pipe.poll(f) for f in feeds])
    await pipe.flush()
    return added


async def outage(pipe: Pipeline, sim: SimServer, *feeds: Feed) -> None:
    """The upstream is down for a poll; then the feed's rest is over."""
    sim.set_down(True)
    for f in feeds:
        with pytest.raises(RemoteError):
            await pipe.poll(f)
    sim.set_down(False)
    later = time.time() + 3600
    pipe.clock.time = lambda: later  # type: ignore[method-assign]


def delivered(hook: HookReceiver) -> list[str]:
    """The ids delivered, each item marked as its upstream's (what `upstream:` matches)."""
    assert all(b["title"].split("|")[0] in SOURCES for b in hook.received), hook.received
    return [str(b["item_id"]) for b in hook.received]


@asynccontextmanager
async def pipeline(
    tmp: Path, hook: HookReceiver, name: str, account: str
) -> AsyncIterator[Pipeline]:
    """The pipeline on one account (``account``: its YAML lines) and a webhook rule."""
    (tmp / "rules.yaml").write_text(RULES)
    config = tmp / "inboxbot.yaml"
    config.write_text(
        f"accounts:\n  {name}:\n{indent(account, '    ')}"
        f'sinks:\n  hooks: {{type: webhook, url: "{hook.url}"}}\n'
        "rules: [rules.yaml]\ntemplates: []\nbacklog: notify\n"
    )
    async with running(load(config), tmp / "state.db") as pipe:
        yield pipe


# --- Mail.td: 30 a page, newest first -------------------------------------------------

INBOX = feed("inbox", "messages")


def mails(setup: Setup, start: datetime, n: int) -> list[str]:
    """``n`` mails a second apart from ``start``, oldest first."""
    return [
        setup.sim.add_message(setup.account, sender="bob@example.com", subject=f"m{i}",
                              text_body=f"body {i}", created_at=start + timedelta(seconds=i))
        for i in range(n)
    ]  # fmt: skip


async def test_mailtd_nothing_new_is_one_list_request_after_a_full_page(setup: Setup) -> None:
    setup.account.rate_limit = 1000
    mails(setup, datetime.now(UTC) - timedelta(minutes=1), 45)  # all inside the look-back
    async with setup.pipeline(RULES, rate=50) as pipe:
        assert await cycle(pipe, INBOX) == 45
        setup.sim.counts.clear()
        assert await cycle(pipe, INBOX) == 0
    assert setup.sim.counts == Counter({"messages.list": 1})


async def test_mailtd_pages_back_to_the_first_known_mail_after_an_outage(setup: Setup) -> None:
    setup.account.rate_limit = 1000
    start = datetime.now(UTC) - timedelta(minutes=10)
    before = mails(setup, start, 10)
    async with setup.pipeline(RULES, rate=50) as pipe:
        assert await cycle(pipe, INBOX) == 10
        await outage(pipe, setup.sim, INBOX)
        gap = mails(setup, start + timedelta(minutes=1), 75)  # two and a half pages
        setup.sim.counts.clear()
        assert await cycle(pipe, INBOX) == 75
        assert setup.sim.counts["messages.list"] == 3  # the third holds known mail
        assert await cycle(pipe, INBOX) == 0
    assert delivered(setup.hook) == before + gap  # oldest first, none lost, none twice


async def test_mailtd_a_failed_second_page_fails_the_whole_poll(setup: Setup) -> None:
    setup.account.rate_limit = 1000
    ids = mails(setup, datetime.now(UTC) - timedelta(minutes=1), 45)
    async with setup.pipeline(RULES, rate=50) as pipe:
        setup.sim.inject("latency", seconds=0.0, path="/messages")  # page 1 answers
        setup.sim.inject("status", status=500, path="/messages")  # page 2 fails
        with pytest.raises(RemoteError):
            await pipe.poll(INBOX)
        assert pipe.store.cursor(INBOX.key) == (False, None)
        assert pipe.store.known(INBOX.key, ids) == set()
        later = time.time() + 3600
        pipe.clock.time = lambda: later  # type: ignore[method-assign]
        assert await cycle(pipe, INBOX) == 45
    assert delivered(setup.hook) == ids


async def test_mailtd_mail_of_one_second_keeps_the_lists_order(setup: Setup) -> None:
    setup.account.rate_limit = 1000
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    ids = [
        setup.sim.add_message(setup.account, sender="b@example.com", subject=f"s{i}",
                              text_body="t", created_at=moment)
        for i in range(40)
    ]  # fmt: skip
    async with setup.pipeline(RULES, rate=50) as pipe:
        assert await cycle(pipe, INBOX) == 40
    # the simulator lists ties by id, newest first: the feed is that list turned round
    assert delivered(setup.hook) == sorted(ids)


# --- e621: the a<id> cursor, 320 a page ---------------------------------------------------


@pytest.fixture
async def e621() -> AsyncIterator[E621Sim]:
    async with E621Sim(edge_rate=1000) as simulator:
        yield simulator


def e621_account(sim: E621Sim, user: SimUser) -> str:
    return f"""\
type: e621
base_url: {sim.base_url}
username: {user.name}
api_key: {user.api_key}
timeout: 2s
feeds:
  dmails: {{every: 1s}}
  comments: {{every: 1s, search: {{poster_id: {user.id}}}}}
"""


@asynccontextmanager
async def e621_pipeline(
    tmp: Path, hook: HookReceiver, sim: E621Sim, user: SimUser
) -> AsyncIterator[Pipeline]:
    async with pipeline(tmp, hook, "furry", e621_account(sim, user)) as pipe:
        pipe.sources["furry"].http.limiter.calls = 10_000  # type: ignore[attr-defined]
        yield pipe


DMAILS, COMMENTS = feed("furry", "dmails"), feed("furry", "comments")


async def test_e621_nothing_new_is_one_request_per_feed_after_a_full_page(
    tmp_path: Path, hook: HookReceiver, e621: E621Sim
) -> None:
    alice, bob = e621.add_user("alice"), e621.add_user("bob")
    for i in range(320):  # one full page
        e621.send_dmail(bob, alice, f"t{i}", "b")
    post = e621.add_post(alice)
    for i in range(3):
        e621.add_comment(post, bob, f"nice {i}")
    async with e621_pipeline(tmp_path, hook, e621, alice) as pipe:
        assert await cycle(pipe, DMAILS, COMMENTS) == 323
        e621.counts.clear()
        assert await cycle(pipe, DMAILS, COMMENTS) == 0
    assert e621.counts == Counter({"dmails.list": 1, "comments.list": 1})


async def test_e621_pages_on_to_every_new_dmail_after_an_outage(
    tmp_path: Path, hook: HookReceiver, e621: E621Sim
) -> None:
    alice, bob = e621.add_user("alice"), e621.add_user("bob")
    before = [str(e621.send_dmail(bob, alice, f"t{i}", "b")) for i in range(5)]
    async with e621_pipeline(tmp_path, hook, e621, alice) as pipe:
        assert await cycle(pipe, DMAILS) == 5
        await outage(pipe, e621, DMAILS)
        gap = [str(e621.send_dmail(bob, alice, f"g{i}", "b")) for i in range(800)]
        e621.counts.clear()
        assert await cycle(pipe, DMAILS) == 800
        assert e621.counts == Counter({"dmails.list": 3})  # 320, 320, 160
    assert delivered(hook) == before + gap


# --- MinuteMail: one list, no pages ---------------------------------------------------


@pytest.fixture
async def mm() -> AsyncIterator[MinuteMailSim]:
    async with MinuteMailSim() as simulator:
        yield simulator


async def test_minutemail_one_request_per_cycle_and_nothing_lost_after_an_outage(
    tmp_path: Path, hook: HookReceiver, mm: MinuteMailSim
) -> None:
    key = mm.add_key()
    box = mm.add_mailbox(key)
    start = datetime.now(UTC) - timedelta(minutes=5)

    def add(n: int, offset: int) -> list[str]:
        return [
            mm.add_mail(box, sender="x@example.com", subject=f"m{i}", body="b",
                        received_at=start + timedelta(seconds=offset + i))
            for i in range(n)
        ]  # fmt: skip

    account = f"""\
type: minutemail
base_url: {mm.base_url}
api_key: {key.key}
mailbox_id: {box.id}
timeout: 2s
rate: 50
"""
    mails_feed = feed("qa", "mails")
    before = add(10, 0)
    async with pipeline(tmp_path, hook, "qa", account) as pipe:
        assert await cycle(pipe, mails_feed) == 10
        mm.counts.clear()
        assert await cycle(pipe, mails_feed) == 0
        assert mm.counts == Counter({"mails.list": 1})
        await outage(pipe, mm, mails_feed)
        gap = add(75, 60)
        mm.counts.clear()
        assert await cycle(pipe, mails_feed) == 75
        assert mm.counts == Counter({"mails.list": 1})
    assert delivered(hook) == before + gap


# --- Rocket.Chat: subscriptions.get?updatedSince, then dm.history of changed rooms ----------


@pytest.fixture
async def rc() -> AsyncIterator[RocketChatSim]:
    async with RocketChatSim(rate_limit=100_000, clock=TickingClock()) as simulator:
        yield simulator


DMS = feed("work", "dms")


@asynccontextmanager
async def rc_pipeline(tmp: Path, hook: HookReceiver, rc: RocketChatSim) -> AsyncIterator[Pipeline]:
    me = rc.find_user("me")
    assert me is not None
    account = f"""\
type: rocketchat
base_url: {rc.base_url}
user_id: {me.id}
token: {me.token}
rate: 100000
timeout: 2s
"""
    async with pipeline(tmp, hook, "work", account) as pipe:
        yield pipe


async def test_rocketchat_nothing_new_is_one_request_and_a_read_room_one_page(
    tmp_path: Path, hook: HookReceiver, rc: RocketChatSim
) -> None:
    me, bob = rc.add_user("me"), rc.add_user("bob")
    room = rc.direct(me, bob)
    rc.add_message(room, bob, "hello")
    async with rc_pipeline(tmp_path, hook, rc) as pipe:
        assert await cycle(pipe, DMS) == 1
        burst = [rc.add_message(room, bob, f"m{i}").id for i in range(130)]
        assert await cycle(pipe, DMS) == 130
        rc.counts.clear()
        assert await cycle(pipe, DMS) == 0
        assert rc.counts == Counter({"subscriptions.get": 1})
        rc.mark_read(room, me)  # read elsewhere: the room changed, nothing is new
        rc.counts.clear()
        assert await cycle(pipe, DMS) == 0
        # a full page of seen messages (all inside the look-back): no second page
        assert rc.counts == Counter({"subscriptions.get": 1, "dm.history": 1})
    assert delivered(hook)[1:] == burst


async def test_rocketchat_pages_back_to_the_first_known_message_after_an_outage(
    tmp_path: Path, hook: HookReceiver, rc: RocketChatSim
) -> None:
    me, bob = rc.add_user("me"), rc.add_user("bob")
    room = rc.direct(me, bob)
    before = [rc.add_message(room, bob, f"b{i}").id for i in range(5)]
    async with rc_pipeline(tmp_path, hook, rc) as pipe:
        assert await cycle(pipe, DMS) == 5
        await outage(pipe, rc, DMS)
        gap = [rc.add_message(room, bob, f"g{i}").id for i in range(250)]
        rc.counts.clear()
        assert await cycle(pipe, DMS) == 250
        assert rc.counts == Counter({"subscriptions.get": 1, "dm.history": 3})
    assert delivered(hook) == before + gap
