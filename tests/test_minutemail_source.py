"""The MinuteMail client against its simulator over HTTP: listing, bodies, attachments,
actions, errors, the quota, a vanished mailbox, and the whole pipeline on top."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.app import load, running
from bot.errors import AuthError, GoneError, PermanentError, QuotaError, RemoteError, TransientError
from bot.http import Limiters
from bot.item import File, Item
from bot.pipeline import Pipeline
from bot.sim.minutemail import MinuteMailSim, SimKey, SimMailbox
from bot.sim.webhook import HookReceiver
from bot.sources import Feed
from bot.sources.minutemail import (
    MinuteMailAccount,
    MinuteMailSource,
    looks_like_html,
    normalize,
    parse_time,
)

ROOT = Path(__file__).resolve().parent.parent
FEED = Feed("qa", "mails", timedelta(seconds=1), None)
HTML = '<html><body><p>Your code is <b>482913</b>.</p><p><a href="https://app.example/verify?t=9">Verify</a></p></body></html>'


class Now:
    """The simulator's wall clock, moved by hand to make mailboxes expire."""

    def __init__(self) -> None:
        self.value = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.value


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
async def mm(now: Now) -> AsyncIterator[MinuteMailSim]:
    async with MinuteMailSim(now=now) as simulator:
        yield simulator


@pytest.fixture
def key(mm: MinuteMailSim) -> SimKey:
    return mm.add_key()


@pytest.fixture
def box(mm: MinuteMailSim, key: SimKey) -> SimMailbox:
    return mm.add_mailbox(key, minutes=10, alias="qa-run")


def source(
    mm: MinuteMailSim,
    key: SimKey,
    box: SimMailbox,
    session: aiohttp.ClientSession,
    limiters: Limiters | None = None,
    **over: object,
) -> MinuteMailSource:
    config = MinuteMailAccount.model_validate(
        {"type": "minutemail", "base_url": mm.base_url, "api_key": key.key,
         "mailbox_id": box.id, "timeout": "2s", "rate": 50, **over}
    )  # fmt: skip
    return MinuteMailSource("qa", config, session, limiters or Limiters())


def mail(mm: MinuteMailSim, box: SimMailbox, subject: str = "Hello", **kwargs: object) -> str:
    kwargs.setdefault("body", f"Body of {subject}")
    kwargs.setdefault("sender", "bob@example.com")
    return mm.add_mail(box, subject=subject, **kwargs)  # type: ignore[arg-type]


def paths(mm: MinuteMailSim) -> list[str]:
    return [f"{r.method} {r.path.split('/mails', 1)[-1] or '/mails'}" for r in mm.requests]


# Listing and normalizing.


async def test_the_first_poll_lists_every_mail_complete(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    ids = [mail(mm, box, f"m{i}") for i in range(3)]
    result = await source(mm, key, box, session).poll("mails", None)
    assert sorted(i.id for i in result.items) == sorted(ids)
    assert result.cursor is None  # new = id not seen: the store dedups
    item = next(i for i in result.items if i.id == ids[0])
    assert (item.account, item.feed, item.kind, item.complete) == ("qa", "mails", "email", True)
    assert (item.sender, item.subject, item.text, item.html) == (
        "bob@example.com",
        "m0",
        "Body of m0",
        None,
    )
    assert item.recipient == "qa-run@minutemail.cc" and item.unread is None
    assert item.created_at.tzinfo is not None and item.raw["mailboxId"] == box.id
    assert len(mm.requests) == 2  # the mailbox once (its address), then the mails


async def test_later_polls_list_only_the_mails(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    src = source(mm, key, box, session)
    await src.poll("mails", None)
    mm.requests.clear()
    mail(mm, box)
    assert len((await src.poll("mails", None)).items) == 1
    assert [(r.method, r.path) for r in mm.requests] == [("GET", f"/v1/mailboxes/{box.id}/mails")]


async def test_html_and_text_bodies(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    page = mail(mm, box, "html", body=HTML)
    plain = mail(mm, box, "text", body="Hi <bob@example.com>, see https://x.example/a. Bye")
    items = {i.id: i for i in (await source(mm, key, box, session).poll("mails", None)).items}
    assert items[page].html == HTML
    assert items[page].text == "Your code is 482913.\n\nVerify"
    assert items[page].links == ("https://app.example/verify?t=9",)
    assert items[plain].html is None
    assert items[plain].text.startswith("Hi <bob@example.com>")
    assert items[plain].links == ("https://x.example/a",)


@pytest.mark.parametrize(
    ("body", "html"),
    [
        ("<p>hi</p>", True),
        ("<!DOCTYPE html><html><body>x</body></html>", True),
        ("line one<br>line two", True),
        ('<a href="https://x.example">x</a>', True),
        ("Plain text.", False),
        ("Write to <alice@example.com> or <https://x.example>", False),
        ("if a < b and c > d", False),
        ("", False),
    ],
)
def test_html_is_told_from_text(body: str, html: bool) -> None:
    assert looks_like_html(body) is html


def test_normalize_tolerates_missing_fields() -> None:
    item = normalize({"id": 7, "receivedAt": "2024-01-18T00:15:00Z", "body": None}, account="a")
    assert (item.id, item.text, item.html, item.attachments, item.links) == ("7", "", None, (), ())
    assert item.created_at == datetime(2024, 1, 18, 0, 15, tzinfo=UTC)


async def test_a_malformed_listing_is_a_transient_failure(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mail(mm, box)
    mm.inject("status", status=200, body={"mails": []}, path="/mails")
    with pytest.raises(TransientError, match="no items list"):
        await source(mm, key, box, session).poll("mails", None)
    mm.inject("status", status=200, body={"items": [{"subject": "no id"}]}, path="/mails")
    with pytest.raises(TransientError, match="malformed mail"):
        await source(mm, key, box, session).poll("mails", None)


# Attachments: listed with the mail, content only on demand.


async def test_attachments_are_listed_and_downloaded_lazily(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    pdf = b"%PDF-1.4\n% receipt\n%%EOF\n"
    files = [("receipt.pdf", "application/pdf", pdf), ("data.xyz1", "application/x-thing", b"\0")]
    mid = mail(mm, box, "receipt", attachments=files)
    src = source(mm, key, box, session)
    (item,) = (await src.poll("mails", None)).items
    assert [(a.name, a.content_type, a.size) for a in item.attachments] == [
        ("receipt.pdf", "application/pdf", len(pdf)),  # guessed from the name
        ("data.xyz1", "application/octet-stream", 1),  # the listing has no contentType
    ]
    assert not [r for r in mm.requests if "attachments" in r.path]
    first, second = (a["id"] for a in item.raw["attachments"])
    assert await src.attachment(item, first) == ("receipt.pdf", "application/pdf", pdf)
    assert await src.attachment(item, second) == ("data.xyz1", "application/x-thing", b"\0")
    assert len([r for r in mm.requests if "attachments" in r.path]) == 2
    assert await src.files(item, 10) == [File("data.xyz1", "application/x-thing", b"\0")]
    mm.mail(mid).attachments.clear()
    with pytest.raises(GoneError):
        await src.attachment(item, first)


async def test_a_download_without_valid_data_is_transient(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mail(mm, box, attachments=[("a.txt", "text/plain", b"x")])
    src = source(mm, key, box, session)
    (item,) = (await src.poll("mails", None)).items
    mm.inject("status", status=200, body={"name": "a.txt", "data": "%%%"}, path="/attachments/")
    with pytest.raises(TransientError, match="base64"):
        await src.attachment(item, item.raw["attachments"][0]["id"])


# Actions.


async def test_delete_one_and_delete_again_is_gone(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mid = mail(mm, box)
    src = source(mm, key, box, session)
    (item,) = (await src.poll("mails", None)).items
    await src.act("delete", {}, [item])
    assert mm.mail(mid).deleted
    with pytest.raises(GoneError):
        await src.act("delete", {}, [item])


async def test_batch_delete_is_one_request_and_skips_unknown_ids(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    ids = [mail(mm, box, f"m{i}") for i in range(4)]
    keep = mail(mm, box, "keep")
    src = source(mm, key, box, session)
    items = [i for i in (await src.poll("mails", None)).items if i.id != keep]
    mm.mail(ids[0]).deleted = True  # gone already: skipped silently
    mm.requests.clear()
    await src.act("delete", {}, items)
    assert paths(mm) == ["DELETE /mails"]
    assert all(mm.mail(i).deleted for i in ids) and not mm.mail(keep).deleted
    assert "delete" in MinuteMailSource.batch_actions


async def test_batch_delete_on_a_vanished_mailbox_is_moot(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    [mail(mm, box, f"m{i}") for i in range(2)]
    src = source(mm, key, box, session)
    items = (await src.poll("mails", None)).items
    mm.expire(box)
    with pytest.raises(GoneError):
        await src.act("delete", {}, items)


async def test_delete_attachments(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    files = [("a.txt", "text/plain", b"a"), ("b.txt", "text/plain", b"b")]
    with_files, without = mail(mm, box, "files", attachments=files), mail(mm, box, "none")
    src = source(mm, key, box, session)
    items = {i.id: i for i in (await src.poll("mails", None)).items}
    mm.requests.clear()
    await src.act("delete_attachments", {}, [items[with_files], items[without]])
    assert paths(mm) == [f"DELETE /{with_files}/attachments"]  # nothing to do for the other
    assert mm.mail(with_files).attachments == [] and not mm.mail(with_files).deleted
    (again,) = [i for i in (await src.poll("mails", None)).items if i.id == with_files]
    assert again.attachments == () and again.raw["hasAttachments"] is False


async def test_an_unknown_action_is_permanent(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mail(mm, box)
    src = source(mm, key, box, session)
    (item,) = (await src.poll("mails", None)).items
    with pytest.raises(PermanentError, match="cannot mark_read"):
        await src.act("mark_read", {}, [item])


# Errors.


async def test_a_refused_key_is_an_auth_error_without_the_key(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    src = source(mm, key, box, session)
    mm.revoke_key(key)
    with pytest.raises(AuthError) as info:
        await src.poll("mails", None)
    assert info.value.status == 401 and "API key refused" in str(info.value)
    assert "Invalid or missing API key" in str(info.value)
    assert key.key not in str(info.value)


async def test_another_users_mailbox_is_a_clear_403(
    mm: MinuteMailSim, key: SimKey, session: aiohttp.ClientSession
) -> None:
    foreign = mm.add_mailbox(mm.add_key())
    with pytest.raises(AuthError, match="no access to mailbox") as info:
        await source(mm, key, foreign, session).poll("mails", None)
    assert info.value.status == 403 and foreign.id in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {}, AuthError),
        (401, "plain words", AuthError),
        (403, {"message": "Origin not allowed"}, AuthError),
        (400, {"error": "Bad Request"}, PermanentError),
        (500, {}, TransientError),
        (502, "<html><body>Bad gateway</body></html>", TransientError),
        (503, {"error": "Service Unavailable", "message": "down"}, TransientError),
    ],
)
async def test_every_error_shape_is_understood(
    mm: MinuteMailSim,
    key: SimKey,
    box: SimMailbox,
    session: aiohttp.ClientSession,
    status: int,
    body: object,
    error: type[Exception],
) -> None:
    mm.inject("status", status=status, body=body)
    with pytest.raises(error) as info:
        await source(mm, key, box, session).poll("mails", None)
    assert type(info.value) is error and key.key not in str(info.value)


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("status", {"status": 500}),
        ("html", {}),
        ("truncated", {}),
        ("reset", {}),
        ("rate_limited", {}),
    ],
)
async def test_faults_are_transient(
    mm: MinuteMailSim,
    key: SimKey,
    box: SimMailbox,
    session: aiohttp.ClientSession,
    fault: str,
    params: dict[str, object],
) -> None:
    mail(mm, box)
    mm.inject(fault, path="/mails", **params)
    with pytest.raises(TransientError) as info:
        await source(mm, key, box, session).poll("mails", None)
    assert type(info.value) is TransientError and key.key not in str(info.value)


async def test_a_slow_answer_times_out(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mm.inject("latency", seconds=0.8)
    with pytest.raises(TransientError, match="timed out"):
        await source(mm, key, box, session, timeout="300ms").poll("mails", None)


async def test_a_per_second_429_is_a_short_transient_error(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    mm.inject("rate_limited", remaining=500)
    with pytest.raises(TransientError) as info:
        await source(mm, key, box, session).poll("mails", None)
    assert not isinstance(info.value, QuotaError) and info.value.retry_after == 1.0


async def test_a_429_with_retry_after_and_no_quota_figure_is_a_rate_limit(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, session: aiohttp.ClientSession
) -> None:
    """Found by `make proof` (faults): a 429 with ``Retry-After: 3`` but no
    ``X-RateLimit-Remaining`` (a proxy's) was taken for the spent quota: the feed rested an
    hour. Now it rests the 3 s it was asked to."""
    mm.inject("status", status=429, message="Too Many Requests", headers={"Retry-After": "3"})
    with pytest.raises(TransientError) as info:
        await source(mm, key, box, session).poll("mails", None)
    assert not isinstance(info.value, QuotaError) and info.value.retry_after == 3.0


async def test_the_quota_is_a_quota_error_with_no_retry_loop(
    now: Now, session: aiohttp.ClientSession
) -> None:
    async with MinuteMailSim(quota=3, now=now) as mm:
        key = mm.add_key()
        box = mm.add_mailbox(key)
        src = source(mm, key, box, session)
        await src.poll("mails", None)  # 2 calls: mailbox and mails
        await src.poll("mails", None)  # the last call of the quota
        with pytest.raises(QuotaError) as info:
            await src.poll("mails", None)
    assert info.value.retry_after == 3600 and info.value.status == 429
    assert [r.status for r in mm.requests] == [200, 200, 200, 429]


async def test_a_low_quota_is_logged_once(
    now: Now, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with MinuteMailSim(quota=103, now=now) as mm:
        key = mm.add_key()
        box = mm.add_mailbox(key)
        src = source(mm, key, box, session)
        for _ in range(3):
            await src.poll("mails", None)
    assert [r.getMessage() for r in caplog.records] == ["quota low"]
    assert caplog.records[0].fields == {"account": "qa", "remaining": 99}  # type: ignore[attr-defined]


async def test_a_vanished_mailbox_is_a_clear_permanent_error(
    mm: MinuteMailSim,
    now: Now,
    key: SimKey,
    box: SimMailbox,
    session: aiohttp.ClientSession,
) -> None:
    src = source(mm, key, box, session)
    await src.poll("mails", None)
    now.value += timedelta(minutes=10)  # the mailbox's lifetime
    with pytest.raises(PermanentError) as info:
        await src.poll("mails", None)
    assert type(info.value) is PermanentError and info.value.status == 404
    assert str(info.value) == (
        f"qa: mailbox {box.id} no longer exists (MinuteMail mailboxes expire after 1–60 "
        "minutes); re-create it and update mailbox_id"
    )


# Politeness: the real per-second limit is not documented, so the client keeps to its own.


async def test_the_client_keeps_its_rate_shared_by_key(
    now: Now, session: aiohttp.ClientSession
) -> None:
    async with MinuteMailSim(rate_limit=2, now=now) as mm:
        key = mm.add_key()
        boxes = [mm.add_mailbox(key), mm.add_mailbox(key)]
        limiters = Limiters()
        sources = [source(mm, key, b, session, limiters, rate=2) for b in boxes]

        async def twice(src: MinuteMailSource) -> None:
            for _ in range(2):
                await src.poll("mails", None)

        await asyncio.gather(*(twice(s) for s in sources))
    assert len(mm.requests) == 6
    assert mm.max_requests_in_window(1.0, key=key.key) <= 2
    assert all(r.status == 200 for r in mm.requests)


def test_the_default_rate_is_polite() -> None:
    config = MinuteMailAccount.model_validate(
        {"type": "minutemail", "api_key": "mmak_x", "mailbox_id": "b"}
    )
    assert (config.rate, config.every, config.base_url) == (
        (2, 1.0),
        timedelta(seconds=30),
        "https://api.minutemail.co",
    )


@pytest.mark.parametrize(
    "text", ["2024-01-18T00:15:00Z", "2024-01-18T00:15:00.5Z", "2024-01-18T00:15:00"]
)
def test_times_parse_in_every_shape(text: str) -> None:
    assert parse_time(text).replace(microsecond=0) == datetime(2024, 1, 18, 0, 15, tzinfo=UTC)


# The pipeline on top: new items, backlog, deletion upstream, a vanished mailbox, faults.


RULES = """\
- name: mm-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
"""


@dataclass
class Setup:
    tmp: Path
    mm: MinuteMailSim
    hook: HookReceiver
    key: SimKey
    box: SimMailbox

    @asynccontextmanager
    async def pipeline(
        self, rules: str = RULES, *, backlog: str = "notify"
    ) -> AsyncIterator[Pipeline]:
        (self.tmp / "rules.yaml").write_text(rules)
        config = self.tmp / "inboxbot.yaml"
        config.write_text(
            f"""\
accounts:
  qa:
    type: minutemail
    base_url: {self.mm.base_url}
    api_key: {self.key.key}
    mailbox_id: {self.box.id}
    every: 1s
    timeout: 1s
    rate: 50
sinks:
  hooks: {{type: webhook, url: "{self.hook.url}"}}
rules: [rules.yaml]
templates: [{ROOT / "templates"}]
backlog: {backlog}
"""
        )
        async with running(load(config), self.tmp / "state.db") as pipe:
            yield pipe


@pytest.fixture
def setup(
    tmp_path: Path, mm: MinuteMailSim, hook: HookReceiver, key: SimKey, box: SimMailbox
) -> Setup:
    return Setup(tmp_path, mm, hook, key, box)


async def cycle(pipe: Pipeline) -> int:
    added = await pipe.poll(FEED)
    await pipe.flush()
    return added


def notified(setup: Setup) -> list[str]:
    return [b["item_id"] for b in setup.hook.received]


async def test_each_new_mail_is_notified_exactly_once(setup: Setup) -> None:
    ids = [mail(setup.mm, setup.box, f"m{i}") for i in range(3)]
    async with setup.pipeline() as pipe:
        assert await cycle(pipe) == 3
        assert await cycle(pipe) == 0
        new = mail(setup.mm, setup.box, "later", body=HTML)
        assert await cycle(pipe) == 1
        assert await cycle(pipe) == 0
    assert sorted(notified(setup)) == sorted([*ids, new])
    assert setup.hook.duplicates() == 0
    last = setup.hook.received[-1]
    assert last["title"] == "bob@example.com: later" and "482913" in last["message"]


async def test_backlog_skip_notifies_only_what_comes_later(setup: Setup) -> None:
    mail(setup.mm, setup.box, "old")
    async with setup.pipeline(backlog="skip") as pipe:
        assert await cycle(pipe) == 1
        fresh = mail(setup.mm, setup.box, "new")
        assert await cycle(pipe) == 1
    assert notified(setup) == [fresh]


async def test_a_mail_deleted_upstream_never_comes_back_as_new(setup: Setup) -> None:
    a, b = mail(setup.mm, setup.box, "a"), mail(setup.mm, setup.box, "b")
    async with setup.pipeline() as pipe:
        assert await cycle(pipe) == 2
        setup.mm.mail(a).deleted = True
        assert await cycle(pipe) == 0
        c = mail(setup.mm, setup.box, "c")
        assert await cycle(pipe) == 1
        assert await cycle(pipe) == 0
    assert sorted(notified(setup)) == sorted([a, b, c])


DELETE_RULES = """\
- name: mm-delete
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
  then: [delete, delete_attachments]
"""


async def test_rules_delete_after_delivery(setup: Setup) -> None:
    ids = [mail(setup.mm, setup.box, f"m{i}") for i in range(3)]
    async with setup.pipeline(DELETE_RULES) as pipe:
        await cycle(pipe)
    assert all(setup.mm.mail(i).deleted for i in ids)
    assert len(notified(setup)) == 3


async def test_a_vanished_mailbox_is_reported_once_and_rests_the_feed(
    setup: Setup, now: Now, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inboxbot")
    mail(setup.mm, setup.box)
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        now.value += timedelta(hours=1)
        with pytest.raises(PermanentError, match="no longer exists"):
            await pipe.poll(FEED)
        asked = len(setup.mm.requests)
        assert await pipe.poll(FEED) == 0  # resting: no request at all
        assert len(setup.mm.requests) == asked
        pipe.clock.time = lambda: time.time() + 901  # type: ignore[method-assign]
        with pytest.raises(PermanentError):
            await pipe.poll(FEED)  # tried again after the rest, still gone
        assert len(setup.mm.requests) == asked + 1
        assert await pipe.poll(FEED) == 0  # and rests longer now
        assert len(setup.mm.requests) == asked + 1
    failing = [r for r in caplog.records if r.getMessage() == "failing"]
    assert len(failing) == 1
    assert "re-create it and update mailbox_id" in failing[0].fields["reason"]  # type: ignore[attr-defined]


async def test_the_quota_rests_the_feed_for_an_hour(setup: Setup) -> None:
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        setup.mm.inject("quota")
        with pytest.raises(QuotaError):
            await pipe.poll(FEED)
        asked = len(setup.mm.requests)
        pipe.clock.time = lambda: time.time() + 3500  # type: ignore[method-assign]
        assert await pipe.poll(FEED) == 0
        assert len(setup.mm.requests) == asked


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("status", {"status": 502}),
        ("html", {}),
        ("truncated", {}),
        ("reset", {}),
        ("latency", {"seconds": 1.5}),
        ("rate_limited", {}),
        ("quota", {}),
    ],
)
async def test_a_failed_poll_changes_nothing_and_invents_nothing(
    setup: Setup, fault: str, params: dict[str, object]
) -> None:
    first = mail(setup.mm, setup.box, "first")
    async with setup.pipeline() as pipe:
        await cycle(pipe)
        second = mail(setup.mm, setup.box, "second")
        before = pipe.store.cursor(FEED.key)
        setup.mm.inject(fault, path="/mails", **params)
        with pytest.raises(RemoteError):
            await pipe.poll(FEED)
        assert pipe.store.cursor(FEED.key) == before
        assert pipe.store.new_items(FEED.key) == []
        pipe.clock.time = lambda: time.time() + 7200  # type: ignore[method-assign]
        assert await cycle(pipe) == 1
        assert await cycle(pipe) == 0
    assert notified(setup) == [first, second]


def test_items_survive_the_store_round_trip() -> None:
    item = normalize(
        {"id": "x", "receivedAt": "2024-01-18T00:15:00Z", "body": HTML,
         "attachments": [{"id": "a1", "name": "doc.pdf", "sizeBytes": 3}]},
        account="qa",
    )  # fmt: skip
    assert Item.from_json(item.to_json()) == item


async def test_the_default_rules_show_a_code_or_a_summary(setup: Setup) -> None:
    rules = (ROOT / "rules" / "minutemail.yaml").read_text().replace("sink: phone", "sink: hooks")
    body = "Your verification code is 482913. Confirm: https://app.example/verify?t=1"
    code = mail(setup.mm, setup.box, "Verify your email", body=body)
    other = mail(setup.mm, setup.box, "Receipt", attachments=[("r.pdf", "application/pdf", b"x")])
    async with setup.pipeline(rules) as pipe:
        await cycle(pipe)
    got = {b["item_id"]: b for b in setup.hook.received}
    assert (got[code]["rule"], got[code]["title"]) == (
        "minutemail-code",
        "Code 482913 — Verify your email",
    )
    assert got[code]["message"] == (
        "bob@example.com → qa-run@minutemail.cc\nhttps://app.example/verify?t=1"
    )
    assert got[other]["rule"] == "minutemail-new-email" and "r.pdf" in got[other]["message"]
