"""The e621 client against the simulator over HTTP: polling, normalizing, actions, errors,
politeness, and one pass through the whole pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import load, running
from bot.cli import main
from bot.errors import AuthError, GoneError, PermanentError, RemoteError, TransientError
from bot.http import Limiters
from bot.item import Item
from bot.sim.e621 import E621Sim, SimUser
from bot.sim.webhook import HookReceiver
from bot.sources import Feed
from bot.sources.e621 import E621Account, E621Source, _records, dtext_to_text, parse_time

WINTER = datetime(2025, 1, 15, 15, 30, tzinfo=UTC)
SUMMER = datetime(2025, 7, 15, 15, 30, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[E621Sim]:  # overrides the Mail.td one of conftest
    async with E621Sim(edge_rate=1000) as simulator:
        yield simulator


@pytest.fixture
def alice(sim: E621Sim) -> SimUser:
    return sim.add_user("alice")


@pytest.fixture
def bob(sim: E621Sim) -> SimUser:
    return sim.add_user("bob")


def fast(sim: E621Sim) -> Limiters:
    """Limiters whose e621 budget is pre-set high, so tests are not slowed by politeness."""
    limiters = Limiters()
    host = sim.base_url.split("//")[1]
    limiters.get(f"e621:{host}", 10_000)
    limiters.get(f"e621-writes:{host}:alice", 10_000, 60.0)
    return limiters


def source(
    sim: E621Sim,
    user: SimUser,
    session: aiohttp.ClientSession,
    limiters: Limiters | None = None,
    **over: Any,
) -> E621Source:
    config = E621Account.model_validate(
        {"type": "e621", "base_url": sim.base_url, "username": user.name,
         "api_key": user.api_key, "timeout": "2s", **over}
    )  # fmt: skip
    return E621Source(user.name, config, session, limiters or fast(sim))


def comments_feed(
    user: SimUser, search: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"feeds": {"comments": {"search": {"poster_id": user.id, **(search or {})}, **extra}}}


def mail(sim: E621Sim, sender: SimUser, to: SimUser, n: int, **kw: Any) -> int:
    return sim.send_dmail(sender, to, f"title {n}", f"body {n}", **kw)


def listed(sim: E621Sim, path: str = "/dmails.json") -> list[str]:
    return [r.query for r in sim.requests if r.path == path]


# --- DMails: polling -------------------------------------------------------------------


async def test_first_poll_takes_the_newest_page_only(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    ids = [mail(sim, bob, alice, n) for n in range(330)]
    result = await source(sim, alice, session).poll("dmails", None)
    assert [i.id for i in result.items] == [str(i) for i in ids[-320:]]  # oldest first
    assert result.cursor == str(ids[-1])
    assert listed(sim) == ["limit=320"]


async def test_incremental_polls_use_the_a_cursor(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    mail(sim, bob, alice, 0)
    src = source(sim, alice, session)
    first = await src.poll("dmails", None)
    new = [mail(sim, bob, alice, n) for n in range(1, 4)]
    second = await src.poll("dmails", first.cursor)
    assert [i.id for i in second.items] == [str(i) for i in new]
    assert listed(sim)[-1] == f"page=a{first.cursor}&limit=320"
    third = await src.poll("dmails", second.cursor)
    assert third.items == [] and third.cursor == second.cursor


@pytest.mark.parametrize(
    ("count", "pages"), [(0, 1), (1, 1), (319, 1), (320, 2), (321, 2), (640, 3)]
)
async def test_pages_are_fetched_while_full(
    sim: E621Sim,
    alice: SimUser,
    bob: SimUser,
    session: aiohttp.ClientSession,
    count: int,
    pages: int,
) -> None:
    start = mail(sim, bob, alice, 0)
    ids = [mail(sim, bob, alice, n) for n in range(count)]
    result = await source(sim, alice, session).poll("dmails", str(start))
    assert [i.id for i in result.items] == [str(i) for i in ids]
    assert len(listed(sim)) == pages
    assert result.cursor == str(ids[-1] if ids else start)


async def test_own_sent_copies_are_never_items(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    received = mail(sim, bob, alice, 1)
    sent = sim.send_dmail(alice, bob, "my reply", "hi bob")
    sent_copy = max(d.id for d in sim.dmails.values() if d.owner_id == alice.id)
    result = await source(sim, alice, session).poll("dmails", None)
    assert [i.id for i in result.items] == [str(received)]
    assert result.cursor == str(sent_copy)  # the cursor still moves past them
    assert sent != sent_copy


async def test_a_dmail_is_normalized(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    body = 'Hi! [b]Open[/b] for commissions? "my refs":https://example.com/refs and post #42.'
    mid = sim.send_dmail(bob, alice, "Commission", body, created_at=WINTER)
    (item,) = (await source(sim, alice, session).poll("dmails", None)).items
    assert (item.account, item.feed, item.kind, item.id) == ("alice", "dmails", "dmail", str(mid))
    assert (item.sender, item.recipient, item.subject) == ("bob", "alice", "Commission")
    assert item.text == "Hi! Open for commissions? my refs and post #42."
    assert item.links == ("https://example.com/refs", f"{sim.base_url}/posts/42")
    assert item.unread is True and item.url == f"{sim.base_url}/dmails/{mid}"
    assert item.created_at == WINTER and item.raw["body"] == body


async def test_timestamps_keep_the_users_offset(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    mail(sim, bob, alice, 1, created_at=WINTER)
    mail(sim, bob, alice, 2, created_at=SUMMER)
    winter, summer = (await source(sim, alice, session).poll("dmails", None)).items
    assert winter.raw["created_at"] == "2025-01-15T10:30:00.000-05:00"
    assert summer.raw["created_at"] == "2025-07-15T11:30:00.000-04:00"
    assert (winter.created_at, summer.created_at) == (WINTER, SUMMER)
    assert winter.created_at.utcoffset() == timedelta(hours=-5)


async def test_a_legacy_server_names_senders_by_a_cached_lookup(
    alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    async with E621Sim(edge_rate=1000, legacy=True) as old:
        a, b = old.add_user("alice"), old.add_user("bob")
        src = source(old, a, session)
        empty = await src.poll("dmails", None)
        assert empty.items == [] and empty.cursor is None  # {"dmails": []} accepted
        for n in range(3):
            mail(old, b, a, n)
        items = (await src.poll("dmails", None)).items
        assert "from_name" not in items[0].raw
        assert [(i.sender, i.recipient) for i in items] == [("bob", "alice")] * 3
        assert [r.path for r in old.requests].count(f"/users/{b.id}.json") == 1


@pytest.mark.parametrize(
    "answer", [[], {"dmails": []}, {"comments": []}], ids=["array", "dmails", "other-key"]
)
def test_empty_answers_in_every_shape(answer: object) -> None:
    assert _records(answer) == []


def test_dtext_becomes_text_and_links() -> None:
    body = (
        '[quote]"bob":/users/5 said:\nnice [i]work[/i][/quote]\n\nh2.Thanks\n'
        "See [url=https://x.org/a]this[/url], [url]https://y.org/b[/url] and "
        '"gallery":[https://z.org/g]. Also "site":https://w.org/c. [[fluffy_tail|tails]]'
        " [spoiler]secret[/spoiler] https://bare.example/p?q=1, post #7 [color=red]red[/color]"
    )
    text, links = dtext_to_text(body, "https://e621.net")
    assert text == (
        "> bob said:\n> nice work\n\nThanks\nSee this, https://y.org/b and gallery. "
        "Also site. tails secret https://bare.example/p?q=1, post #7 red"
    )
    assert links == (
        "https://e621.net/users/5", "https://x.org/a", "https://y.org/b", "https://z.org/g",
        "https://w.org/c", "https://bare.example/p?q=1", "https://e621.net/posts/7",
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["2025-11-13T00:01:30.471-05:00", "2025-11-13T05:01:30.471+00:00", "2025-11-13T05:01:30.471Z"],
)
def test_times_parse_with_their_offset(text: str) -> None:
    assert parse_time(text) == datetime(2025, 11, 13, 5, 1, 30, 471000, tzinfo=UTC)


# --- comments --------------------------------------------------------------------------


async def test_comments_on_my_uploads(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    mine, other = sim.add_post(alice), sim.add_post(bob)
    first = sim.add_comment(mine, bob, "Nice [b]one[/b]!")
    sim.add_comment(other, bob, "not on my upload")
    sim.add_comment(mine, alice, "thanks (my own)")
    sim.add_comment(mine, bob, "spam", is_hidden=True)
    sim.add_comment(mine, bob, "downvoted to oblivion", score=-9)
    src = source(sim, alice, session, **comments_feed(alice, {"body_matches": ""}))
    result = await src.poll("comments", None)
    assert [(i.id, i.text, i.sender) for i in result.items] == [(str(first), "Nice one!", "bob")]
    (item,) = result.items
    assert item.url == f"{sim.base_url}/posts/{mine}#comment-{first}"
    assert item.subject == f"Comment on post #{mine}" and item.unread is None
    assert listed(sim, "/comments.json") == [
        f"search[poster_id]={alice.id}&group_by=comment&limit=320"
    ]
    assert [r.path for r in sim.requests].count("/users.json") == 1  # my id, found once
    later = sim.add_comment(mine, bob, "another")
    again = await src.poll("comments", result.cursor)
    assert [i.id for i in again.items] == [str(later)]
    assert listed(sim, "/comments.json")[-1].startswith(
        f"search[poster_id]={alice.id}&group_by=comment&page=a"
    )
    assert [r.path for r in sim.requests].count("/users.json") == 1


async def test_own_and_hidden_comments_when_asked(
    sim: E621Sim, session: aiohttp.ClientSession
) -> None:
    mod = sim.add_user("mod", level="moderator")
    post = sim.add_post(mod)
    own = sim.add_comment(post, mod, "my own")
    hidden = sim.add_comment(post, sim.add_user("carl"), "hidden", is_hidden=True)
    default = await source(sim, mod, session, **comments_feed(mod)).poll("comments", None)
    assert default.items == []
    both = source(sim, mod, session, **comments_feed(mod, include_own=True, include_hidden=True))
    assert [i.id for i in (await both.poll("comments", None)).items] == [str(own), str(hidden)]


def test_a_comments_feed_needs_a_search() -> None:
    with pytest.raises(ValueError, match="needs search"):
        E621Account.model_validate(
            {
                "type": "e621",
                "username": "a",
                "api_key": "k",
                "feeds": {"comments": {"every": "10m"}},
            }
        )


@pytest.mark.parametrize("agent", ["Mozilla/5.0 (X11; Linux x86_64)", " "])
def test_a_browser_or_empty_user_agent_is_refused_by_the_config(agent: str) -> None:
    with pytest.raises(ValueError, match="user agents"):
        E621Account.model_validate(
            {"type": "e621", "username": "a", "api_key": "k", "user_agent": agent}
        )


# --- actions ---------------------------------------------------------------------------


async def dmail_items(sim: E621Sim, src: E621Source) -> list[Item]:
    return (await src.poll("dmails", None)).items


@pytest.mark.parametrize("redirects", [False, True], ids=["204", "302"])
async def test_dmail_actions(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession, redirects: bool
) -> None:
    sim.redirect_json_writes = redirects
    a, b, c = (mail(sim, bob, alice, n) for n in range(3))
    src = source(sim, alice, session)
    items = {int(i.id): i for i in await dmail_items(sim, src)}
    await src.act("mark_read", {}, [items[a]])
    assert sim.dmails[a].is_read and not sim.dmails[b].is_read
    await src.act("delete", {}, [items[b]])
    await src.act("delete", {}, [items[b]])  # idempotent
    assert sim.dmails[b].is_deleted
    await src.act("mark_all_read", {}, [items[c]])
    assert sim.dmails[c].is_read
    writes = [(r.method, r.path, r.status) for r in sim.requests if r.method != "GET"]
    ok = 302 if redirects else 204
    assert writes == [
        ("PUT", f"/dmails/{a}/mark_as_read.json", ok),
        ("DELETE", f"/dmails/{b}.json", ok),
        ("DELETE", f"/dmails/{b}.json", ok),
        ("PUT", "/dmails/mark_all_as_read.json", ok),
    ]


async def test_an_action_on_a_vanished_dmail_is_gone(
    sim: E621Sim, alice: SimUser, session: aiohttp.ClientSession
) -> None:
    ghost = Item("alice", "dmails", "dmail", "999", WINTER)
    with pytest.raises(GoneError):
        await source(sim, alice, session).act("mark_read", {}, [ghost])


async def comment_item(sim: E621Sim, src: E621Source, **kw: Any) -> Item:
    (item,) = [
        i
        for i in (await src.poll("comments", None)).items
        if all(i.raw[k] == v for k, v in kw.items())
    ]
    return item


async def test_votes_do_not_toggle_when_retried_and_unvote(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    post = sim.add_post(alice)
    cid = sim.add_comment(post, bob, "hi", score=3)
    src = source(sim, alice, session, **comments_feed(alice))
    item = await comment_item(sim, src)
    await src.act("vote_up", {}, [item])
    await src.act("vote_up", {}, [item])  # a retry: still up
    assert sim.votes[(cid, alice.id)] == 1 and sim.comments[cid].score == 4
    await src.act("vote_down", {}, [item])
    assert sim.votes[(cid, alice.id)] == -1 and sim.comments[cid].score == 2
    await src.act("unvote", {}, [item])
    assert (cid, alice.id) not in sim.votes and sim.comments[cid].score == 3


async def test_reply_hide_and_unhide(sim: E621Sim, session: aiohttp.ClientSession) -> None:
    mod, bob = sim.add_user("mod", level="moderator"), sim.add_user("bob")
    post = sim.add_post(mod)
    cid = sim.add_comment(post, bob, "rude words")
    src = source(sim, mod, session, **comments_feed(mod))
    item = await comment_item(sim, src)
    await src.act("reply", {"message": "Please keep it civil, @bob."}, [item])
    reply = max(sim.comments.values(), key=lambda c: c.id)
    assert (reply.post_id, reply.creator_id, reply.body) == (
        post,
        mod.id,
        "Please keep it civil, @bob.",
    )
    await src.act("hide", {}, [item])
    assert sim.comments[cid].is_hidden
    await src.act("unhide", {}, [item])
    assert not sim.comments[cid].is_hidden
    with pytest.raises(PermanentError, match="needs a message"):
        await src.act("reply", {}, [item])


async def test_refused_votes_and_hides_are_clear_permanent_errors(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    post = sim.add_post(alice)
    sim.add_comment(post, alice, "mine")
    sim.add_comment(post, bob, "sticky", is_sticky=True)
    src = source(sim, alice, session, **comments_feed(alice, include_own=True))
    own = await comment_item(sim, src, body="mine")
    sticky = await comment_item(sim, src, body="sticky")
    with pytest.raises(PermanentError, match="You cannot vote on your own comments"):
        await src.act("vote_up", {}, [own])
    with pytest.raises(PermanentError, match="You cannot vote on sticky comments"):
        await src.act("vote_down", {}, [sticky])
    with pytest.raises(PermanentError, match="Access Denied") as info:
        await src.act("hide", {}, [sticky])  # not hers, and she is no moderator
    assert not isinstance(info.value, AuthError)


# --- errors ----------------------------------------------------------------------------


async def test_a_wrong_key_is_an_auth_error_without_the_key(
    sim: E621Sim, alice: SimUser, session: aiohttp.ClientSession
) -> None:
    src = source(sim, alice, session, api_key="wrong-key-123")
    with pytest.raises(AuthError, match="AuthenticationFailure") as info:
        await src.poll("dmails", None)
    assert "wrong-key-123" not in str(info.value) and alice.api_key not in str(info.value)
    alice.banned = "forever"
    with pytest.raises(AuthError, match="banned"):
        await source(sim, alice, session).poll("dmails", None)


@pytest.mark.parametrize(
    ("fault", "params", "error", "words"),
    [
        ("status", {"status": 403, "reason": "Access Denied"}, AuthError, "Access Denied"),
        (
            "status",
            {
                "status": 500,
                "message": "The database timed out running your query.",
                "code": "a1b2",
            },
            TransientError,
            "timed out",
        ),
        ("status", {"status": 422, "message": "Invalid vote"}, PermanentError, "Invalid vote"),
        ("html", {"status": 502}, TransientError, "502"),
        ("status", {"status": 200}, TransientError, "other than a list"),
        ("rate_limited", {}, TransientError, "slow down"),
        ("truncated", {}, TransientError, "invalid JSON"),
        ("reset", {}, TransientError, "dmails"),
        ("latency", {"seconds": 3}, TransientError, "timed out"),
    ],
)
async def test_error_shapes_and_faults_become_our_errors(
    sim: E621Sim,
    alice: SimUser,
    session: aiohttp.ClientSession,
    fault: str,
    params: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    sim.inject(fault, **params)
    with pytest.raises(error, match=words) as info:
        await source(sim, alice, session).poll("dmails", None)
    assert alice.api_key not in str(info.value)
    if fault == "rate_limited":
        assert isinstance(info.value, TransientError) and info.value.retry_after


async def test_the_write_throttle_is_transient_with_a_hint(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    mail(sim, bob, alice, 1)
    src = source(sim, alice, session)
    (item,) = await dmail_items(sim, src)
    sim.inject("throttled", method="PUT")
    with pytest.raises(TransientError, match="write budget") as info:
        await src.act("mark_read", {}, [item])
    assert info.value.retry_after and not sim.dmails[int(item.id)].is_read


async def test_a_429_on_a_read_keeps_its_retry_after_and_blames_no_write(
    sim: E621Sim, alice: SimUser, session: aiohttp.ClientSession
) -> None:
    """Found by `make proof` (faults): a GET answered 429 was logged as "write budget used
    up" (the daemon had written nothing)."""
    sim.inject("status", status=429, path="/dmails", headers={"Retry-After": "3"})
    with pytest.raises(TransientError, match="too many requests") as info:
        await source(sim, alice, session).poll("dmails", None)
    assert info.value.retry_after == 3.0 and "write" not in str(info.value)


async def test_a_refused_pagination_is_reported_as_our_bug(
    sim: E621Sim, alice: SimUser, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(PermanentError) as info:
        await source(sim, alice, session).poll("dmails", str(2**31))
    assert str(info.value) == (
        "alice: e621 refused our pagination (410: Page parameter is out of valid range.): "
        "this is a bug in inboxbot"
    )


async def test_a_library_user_agent_is_blocked_at_the_edge(
    sim: E621Sim, alice: SimUser, session: aiohttp.ClientSession
) -> None:
    src = source(sim, alice, session, user_agent="python-requests/2.31")
    with pytest.raises(PermanentError, match="User-Agent"):
        await src.poll("dmails", None)
    assert sim.requests[-1].status == 403


async def test_every_request_carries_the_descriptive_user_agent(
    sim: E621Sim, alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    mail(sim, bob, alice, 1)
    src = source(sim, alice, session)
    await src.act("mark_read", {}, await dmail_items(sim, src))
    agents = {r.agent for r in sim.requests}
    assert len(agents) == 1 and agents.pop().endswith("(by alice on e621)")


# --- politeness ------------------------------------------------------------------------


async def test_two_accounts_share_one_polite_budget_per_host(
    alice: SimUser, bob: SimUser, session: aiohttp.ClientSession
) -> None:
    async with E621Sim() as real:  # the real edge: 503 past 2 requests/s
        a, b = real.add_user("alice"), real.add_user("bob")
        for n in range(3):
            mail(real, b, a, n)
            mail(real, a, b, n)
        limiters = Limiters()  # as the daemon makes it: nothing pre-set
        sources = [source(real, u, session, limiters, **comments_feed(u)) for u in (a, b)]
        started = time.monotonic()
        polls = [s.poll(f, None) for s in sources for f in ("dmails", "comments")]
        results = await asyncio.gather(*polls)
        assert [len(r.items) for r in results] == [3, 0, 3, 0]
        assert all(r.status == 200 for r in real.requests)
        assert len(real.requests) == 4
        assert real.max_requests_in_window(1.0) <= 2  # bursts: never above 2/s
        assert real.max_requests_in_window(2.0) <= 2  # sustained: 1/s
        assert time.monotonic() - started >= 2.0


# --- through the pipeline --------------------------------------------------------------

FEED = Feed("furry", "dmails", timedelta(seconds=1), None)

RULES = """\
- name: new-dmail
  when: {kind: dmail, unread: true}
  notify: [{sink: hooks, title: "{{ item.sender }}: {{ item.subject }}", message: "{{ item.text }}"}]
  then: [mark_read]
"""


def write_config(tmp: Path, sim: E621Sim, user: SimUser, hook: HookReceiver, rules: str) -> Path:
    (tmp / "templates").mkdir(exist_ok=True)
    (tmp / "rules.yaml").write_text(rules)
    config = tmp / "inboxbot.yaml"
    config.write_text(
        f"""\
accounts:
  furry:
    type: e621
    base_url: {sim.base_url}
    username: {user.name}
    api_key: {user.api_key}
    timeout: 2s
    feeds:
      dmails: {{every: 1s}}
      comments: {{every: 1s, search: {{poster_id: {user.id}}}}}
sinks:
  hooks: {{type: webhook, url: "{hook.url}"}}
rules: [rules.yaml]
templates: [templates]
backlog: notify
"""
    )
    return config


@pytest.mark.parametrize("fault", ["html", "truncated", "rate_limited"])
async def test_a_failed_poll_changes_nothing_then_the_dmail_is_notified_and_read(
    tmp_path: Path, sim: E621Sim, alice: SimUser, bob: SimUser, hook: HookReceiver, fault: str
) -> None:
    mid = sim.send_dmail(bob, alice, "Commission?", "Are you [b]open[/b]?")
    loaded = load(write_config(tmp_path, sim, alice, hook, RULES))
    async with running(loaded, tmp_path / "state.db") as pipe:
        sim.inject(fault, path="/dmails")
        with pytest.raises(RemoteError):
            await pipe.poll(FEED)
        assert pipe.store.cursor(FEED.key) == (False, None)
        assert hook.received == [] and not sim.dmails[mid].is_read
        pipe.clock.time = lambda: time.time() + 3600  # type: ignore[method-assign]
        assert await pipe.poll(FEED) == 1
        await pipe.flush()
    assert [(b["item_id"], b["title"], b["message"]) for b in hook.received] == [
        (str(mid), "bob: Commission?", "Are you open?")
    ]
    assert sim.dmails[mid].is_read


def test_check_refuses_an_action_comments_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = "- name: wipe\n  when: {kind: comment}\n  then: [delete]\n"
    fake = E621Sim()
    fake.base_url = "http://127.0.0.1:9"
    hook = HookReceiver()
    hook.url = "http://127.0.0.1:9/hook"
    config = write_config(tmp_path, fake, SimUser(1, "alice", "key"), hook, rules)
    assert main(["--config", str(config), "check"]) == 2
    err = capsys.readouterr()
    assert (
        "action 'delete' is not available for account 'furry' (e621 comment); "
        "it can do: hide, reply, unhide, unvote, vote_down, vote_up"
    ) in err.out + err.err
