"""The Mail.td client against the simulator over HTTP: pages, detail, actions, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from bot.errors import AuthError, GoneError, PermanentError, QuotaError, TransientError
from bot.http import Limiters
from bot.item import File
from bot.sim.mailtd import MailTdSim, SimAccount
from bot.sources.mailtd import MailTdAccount, MailTdSource, parse_time


@pytest.fixture
def account(sim: MailTdSim) -> SimAccount:
    return sim.add_account("carol@mail.td")


def source(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession, **over: object
) -> MailTdSource:
    config = MailTdAccount.model_validate(
        {"type": "mailtd", "base_url": sim.base_url, "account_id": account.address,
         "token": account.token, "timeout": "2s", **over}
    )  # fmt: skip
    return MailTdSource("carol", config, session, Limiters())


def fill(
    sim: MailTdSim, account: SimAccount, n: int, *, step: timedelta = timedelta(seconds=1)
) -> list[str]:
    start = datetime.now(UTC)
    return [
        sim.add_message(account, sender="x@example.com", subject=f"m{i}", text_body=f"body {i}",
                        created_at=start - step * (n - i))
        for i in range(n)
    ]  # fmt: skip


def list_requests(sim: MailTdSim) -> list[str]:
    return [r.query for r in sim.requests if r.path.endswith("/messages")]


@pytest.mark.parametrize(
    ("count", "pages"), [(0, 1), (1, 1), (29, 1), (30, 2), (31, 2), (60, 3), (61, 3)]
)
async def test_pages_of_30_until_a_short_page(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession, count: int, pages: int
) -> None:
    ids = fill(sim, account, count)
    result = await source(sim, account, session).poll("messages", None)
    assert sorted(i.id for i in result.items) == sorted(ids)
    assert len(list_requests(sim)) == pages


async def test_the_cursor_stops_paging_at_known_mail(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    fill(sim, account, 90, step=timedelta(hours=1))
    src = source(sim, account, session)
    first = await src.poll("messages", None)
    assert len(first.items) == 90
    new = sim.add_message(account, sender="y@example.com", subject="fresh", text_body="hi")
    sim.requests.clear()
    second = await src.poll("messages", first.cursor)
    assert new in {i.id for i in second.items}
    assert len(list_requests(sim)) == 1
    assert second.cursor and parse_time(second.cursor) > parse_time(first.cursor or "")


async def test_a_summary_is_normalized(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    sim.add_message(
        account,
        sender="noreply@example.com",
        from_name="Example",
        subject="Verify your email",
        text_body="Click",
    )
    (item,) = (await source(sim, account, session).poll("messages", None)).items
    assert (item.account, item.feed, item.kind) == ("carol", "messages", "email")
    assert item.sender == "Example <noreply@example.com>" and item.unread is True
    assert item.recipient == "carol@mail.td" and item.created_at.tzinfo is not None
    assert item.complete is False and item.raw["subject"] == "Verify your email"


async def test_the_detail_completes_an_item(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    html = '<h1>Hi</h1><p>Your code: <b>123456</b>. <a href="https://ex.example/verify?t=9">Verify</a></p>'
    sim.add_message(account, sender="a@example.com", subject="s", html_body=html,
                    attachments=[("doc.pdf", "application/pdf", b"%PDF-1.4 x")])  # fmt: skip
    src = source(sim, account, session)
    (item,) = (await src.poll("messages", None)).items
    full = await src.complete(item)
    assert full.complete and full.html == html
    assert "Your code: 123456. Verify" in full.text
    assert full.links == ("https://ex.example/verify?t=9",)
    assert [(a.name, a.content_type, a.size) for a in full.attachments] == [
        ("doc.pdf", "application/pdf", 10)
    ]


async def test_files_downloads_attachments_within_the_size_cap(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    big, small = b"x" * 2000, b"%PDF-1.4 x"
    sim.add_message(account, sender="a@example.com", subject="s", text_body="t",
                    attachments=[("big.bin", "application/octet-stream", big),
                                 ("doc.pdf", "application/pdf", small)])  # fmt: skip
    src = source(sim, account, session)
    (item,) = (await src.poll("messages", None)).items
    full = await src.complete(item)
    assert await src.files(full, 1000) == [File("doc.pdf", "application/pdf", small)]
    assert [f.name for f in await src.files(full, 5000)] == ["big.bin", "doc.pdf"]


async def test_an_expired_or_deleted_detail_is_gone(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    a, b = fill(sim, account, 2)
    src = source(sim, account, session)
    items = {i.id: i for i in (await src.poll("messages", None)).items}
    sim.expire(a)
    await src.act("delete", {}, [items[b]])
    for mid in (a, b):
        with pytest.raises(GoneError):
            await src.complete(items[mid])


async def test_mark_read_single_batch_and_delete(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    ids = fill(sim, account, 250)
    src = source(sim, account, session)
    items = (await src.poll("messages", None)).items
    sim.requests.clear()
    await src.act("mark_read", {}, items)
    batch = [r for r in sim.requests if r.path.endswith("/messages/read")]
    assert len(batch) == 2  # 200 + 50
    assert all(sim.message(i).is_read for i in ids)
    one = sim.add_message(account, sender="s@example.com", subject="one", text_body="x")
    item = next(i for i in (await src.poll("messages", None)).items if i.id == one)
    await src.act("mark_read", {}, [item])
    assert sim.message(one).is_read
    await src.act("delete", {}, [item])
    assert sim.message(one).deleted
    with pytest.raises(GoneError):
        await src.act("delete", {}, [item])


async def test_the_client_never_breaks_the_rate_limit(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    fill(sim, account, 30 * 12)
    result = await source(sim, account, session).poll("messages", None)
    assert len(result.items) == 360
    assert sim.max_requests_in_window(1.0, token=account.token) <= 4
    assert all(r.status != 429 for r in sim.requests)


@pytest.mark.parametrize(
    ("fault", "params", "error"),
    [
        ("status", {"status": 500}, TransientError),
        ("status", {"status": 503}, TransientError),
        ("html", {}, TransientError),
        ("truncated", {}, TransientError),
        ("reset", {}, TransientError),
        ("rate_limited", {}, TransientError),
        ("quota", {}, QuotaError),
    ],
)
async def test_faults_become_our_errors(
    sim: MailTdSim,
    account: SimAccount,
    session: aiohttp.ClientSession,
    fault: str,
    params: dict[str, object],
    error: type[Exception],
) -> None:
    fill(sim, account, 3)
    sim.inject(fault, **params)
    with pytest.raises(error) as info:
        await source(sim, account, session).poll("messages", None)
    assert account.token not in str(info.value)


@pytest.mark.parametrize("header", ["3", "date"])
async def test_a_429_keeps_the_retry_after_it_names(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession, header: str
) -> None:
    """Found by `make proof` (faults): a 429 with ``Retry-After: 3`` was tried again after
    1 s (two list requests inside the wait); now the feed rests as long as it says."""
    stamp = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    sim.inject("status", status=429, headers={"Retry-After": "3" if header == "3" else stamp})
    with pytest.raises(TransientError) as info:
        await source(sim, account, session).poll("messages", None)
    assert info.value.retry_after is not None and 2.0 <= info.value.retry_after <= 4.0


async def test_a_detail_refused_with_retry_after_holds_the_list_too(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    """Found by `make proof` (faults): after a detail's 429 with ``Retry-After: 3`` the list
    was polled 1 s later (3 requests inside the wait). Now nothing is sent until it ends."""
    fill(sim, account, 1)
    src = source(sim, account, session)
    (item,) = (await src.poll("messages", None)).items
    sim.inject("status", status=429, path="/messages/", headers={"Retry-After": "3"})
    with pytest.raises(TransientError):
        await src.complete(item)
    asked = len(sim.requests)
    with pytest.raises(TransientError, match="not sent") as info:
        await src.poll("messages", None)
    assert len(sim.requests) == asked
    assert info.value.retry_after is not None and 2.5 < info.value.retry_after <= 3.0


async def test_a_legacy_quota_code_is_a_quota_error(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    sim.inject("quota", legacy=True)
    with pytest.raises(QuotaError) as info:
        await source(sim, account, session).poll("messages", None)
    assert info.value.retry_after and info.value.retry_after >= 600


async def test_a_slow_answer_times_out(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    sim.inject("latency", seconds=3.0)
    with pytest.raises(TransientError, match="timed out"):
        await source(sim, account, session).poll("messages", None)


async def test_a_refused_token_is_an_auth_error_without_the_token(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    src = source(sim, account, session)
    sim.revoke_token(account)
    with pytest.raises(AuthError) as info:
        await src.poll("messages", None)
    assert "invalid_or_expired_token" in str(info.value)
    assert account.token not in str(info.value)


async def test_an_unknown_account_is_permanent(
    sim: MailTdSim, account: SimAccount, session: aiohttp.ClientSession
) -> None:
    src = source(sim, account, session, account_id="nobody@mail.td")
    with pytest.raises((PermanentError, AuthError)):
        await src.poll("messages", None)


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-15T10:30:00Z",
        "2025-01-15T10:30:00.123Z",
        "2025-01-15T10:30:00+00:00",
        "2025-01-15T10:30:00",
    ],
)
def test_times_parse_in_every_shape(text: str) -> None:
    assert parse_time(text).astimezone(UTC).replace(microsecond=0) == datetime(
        2025, 1, 15, 10, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("created_at", [None, "yesterday", 12345])
def test_an_odd_time_does_not_block_the_feed(created_at: object) -> None:
    src = MailTdSource(
        "carol",
        MailTdAccount.model_validate(
            {"type": "mailtd", "account_id": "a@mail.td", "token": "td_x"}
        ),
        None,
        Limiters(),
    )  # type: ignore[arg-type]
    entry = {"id": "m1", "subject": "hi", "is_read": False, "created_at": created_at}
    item = src._summary({k: v for k, v in entry.items() if v is not None})
    assert item.id == "m1" and item.created_at.tzinfo is not None


def test_an_entry_without_id_is_a_broken_answer() -> None:
    src = MailTdSource(
        "carol",
        MailTdAccount.model_validate(
            {"type": "mailtd", "account_id": "a@mail.td", "token": "td_x"}
        ),
        None,
        Limiters(),
    )  # type: ignore[arg-type]
    with pytest.raises(TransientError, match="no id"):
        src._summary({"subject": "hi"})
