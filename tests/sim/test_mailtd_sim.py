"""The Mail.td simulator, driven over real HTTP the way a client sees it."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

import aiohttp
import pytest

from bot.sim.corpus import realistic_message
from bot.sim.mailtd import MailTdSim, SimAccount, seed_realistic
from tests.sim.shared import FakeClock, bearer_session, call, statuses

T0 = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)


@pytest.fixture
async def mail_sim() -> AsyncIterator[MailTdSim]:
    async with MailTdSim(rate_limit=1000, now=lambda: T0) as simulator:
        yield simulator


@pytest.fixture
def alice(mail_sim: MailTdSim) -> SimAccount:
    return mail_sim.add_account("alice@mail.td")


@pytest.fixture
async def http(mail_sim: MailTdSim, alice: SimAccount) -> AsyncIterator[aiohttp.ClientSession]:
    async with bearer_session(mail_sim.base_url, alice.token) as session:
        yield session


def inbox(account: SimAccount, tail: str = "") -> str:
    return f"/api/accounts/{account.id}/messages{tail}"


def add(sim: MailTdSim, account: SimAccount, n: int = 0, **kwargs: Any) -> str:
    fields: dict[str, Any] = {"sender": "noreply@example.com", "subject": f"mail {n}"}
    fields.update(text_body="hello", created_at=T0 + timedelta(minutes=n))
    return sim.add_message(account, **{**fields, **kwargs})


# Authentication and mailbox addressing.


async def test_auth_errors(mail_sim: MailTdSim, alice: SimAccount) -> None:
    bob = mail_sim.add_account("bob@mail.td")
    async with aiohttp.ClientSession(mail_sim.base_url) as anon:
        assert await call(anon, "GET", inbox(alice)) == (401, {"error": "unauthorized"})
        wrong = {"Authorization": "Bearer td_nope"}
        assert await call(anon, "GET", inbox(alice), headers=wrong) == (
            401,
            {"error": "invalid_or_expired_token"},
        )
        as_bob = {"Authorization": f"Bearer {bob.token}"}
        assert await call(anon, "GET", inbox(alice), headers=as_bob) == (
            403,
            {"error": "forbidden"},
        )
        unknown = "/api/accounts/nobody@mail.td/messages"
        assert await call(anon, "GET", unknown, headers=as_bob) == (404, {"error": "not_found"})
        mail_sim.revoke_token(bob)
        status, body = await call(anon, "GET", inbox(bob), headers=as_bob)
        assert (status, body) == (401, {"error": "invalid_or_expired_token"})


async def test_account_by_address_or_uuid(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    add(mail_sim, alice)
    by_id = await call(http, "GET", inbox(alice))
    by_address = await call(http, "GET", "/api/accounts/Alice@mail.td/messages")
    assert by_id == by_address
    assert alice.token.startswith("td_")


async def test_unknown_route_and_method(http: aiohttp.ClientSession, alice: SimAccount) -> None:
    assert await call(http, "GET", "/api/nothing") == (404, {"error": "not_found"})
    assert await call(http, "POST", inbox(alice)) == (405, {"error": "method_not_allowed"})


# Listing.


@pytest.mark.parametrize(
    ("count", "sizes"), [(0, [0]), (30, [30, 0]), (31, [30, 1, 0]), (60, [30, 30, 0])]
)
async def test_pagination(
    mail_sim: MailTdSim,
    alice: SimAccount,
    http: aiohttp.ClientSession,
    count: int,
    sizes: list[int],
) -> None:
    for n in range(count):
        add(mail_sim, alice, n)
    seen: list[str] = []
    for page, size in enumerate(sizes, start=1):
        status, body = await call(http, "GET", inbox(alice), params={"page": str(page)})
        assert status == 200
        assert body["page"] == page
        assert len(body["messages"]) == size
        seen += [m["subject"] for m in body["messages"]]
    assert seen == [f"mail {n}" for n in reversed(range(count))]


@pytest.mark.parametrize("page", ["0", "-1", "abc", ""])
async def test_invalid_page(http: aiohttp.ClientSession, alice: SimAccount, page: str) -> None:
    status, body = await call(http, "GET", inbox(alice), params={"page": page})
    assert (status, body) == (400, {"error": "invalid_page"})


async def test_summary_shape(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    html = "<html><style>p {color: red}</style><p>Click&nbsp;<b>here</b> " + "x" * 200 + "</p>"
    message_id = add(mail_sim, alice, from_name="Example", text_body=None, html_body=html)
    mail_sim.add_message(alice, sender="a@b.example", subject="deleted", text_body="gone")
    mail_sim.message(next(reversed(mail_sim.messages))).deleted = True
    _, body = await call(http, "GET", inbox(alice))
    [summary] = body["messages"]
    assert summary == {
        "id": message_id,
        "sender": "noreply@example.com",
        "from": "Example <noreply@example.com>",
        "subject": "mail 0",
        "preview_text": "Click here " + "x" * 89,
        "size": len(mail_sim.message(message_id).source),
        "is_read": False,
        "created_at": "2025-01-15T10:30:00Z",
    }


# One message: detail, source, attachments.


async def test_detail_with_nullable_bodies(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    pdf = ("doc.pdf", "application/pdf", b"%PDF-1.4 tiny")
    text_only = add(mail_sim, alice, attachments=[pdf])
    html_only = add(mail_sim, alice, text_body=None, html_body="<p>hi</p>")
    status, body = await call(http, "GET", inbox(alice, f"/{text_only}"))
    assert status == 200
    assert "is_read" not in body
    assert body["address"] == "alice@mail.td"
    assert (body["text_body"], body["html_body"]) == ("hello", None)
    assert body["attachments"] == [
        {"index": 0, "filename": "doc.pdf", "content_type": "application/pdf", "size": 13}
    ]
    _, body = await call(http, "GET", inbox(alice, f"/{html_only}"))
    assert (body["text_body"], body["html_body"], body["attachments"]) == (None, "<p>hi</p>", [])


async def test_expired_is_gone_but_listed(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    message_id = add(mail_sim, alice, attachments=[("a.txt", "text/plain", b"a")])
    mail_sim.expire(message_id)
    for tail in ("", "/source", "/attachments/0"):
        assert await call(http, "GET", inbox(alice, f"/{message_id}{tail}")) == (
            410,
            {"error": "gone"},
        )
    _, listing = await call(http, "GET", inbox(alice))
    assert [m["id"] for m in listing["messages"]] == [message_id]


async def test_unknown_message_is_404(http: aiohttp.ClientSession, alice: SimAccount) -> None:
    for method, tail in [("GET", ""), ("GET", "/source"), ("PUT", "/read"), ("DELETE", "")]:
        assert await call(http, method, inbox(alice, f"/nope{tail}")) == (
            404,
            {"error": "not_found"},
        )


async def test_source_is_a_parseable_eml(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    attachment = ("doc.pdf", "application/pdf", b"%PDF-1.4 tiny")
    message_id = add(
        mail_sim, alice, from_name="Example", html_body="<p>hello</p>", attachments=[attachment]
    )
    async with http.get(inbox(alice, f"/{message_id}/source")) as resp:
        assert resp.status == 200
        assert resp.content_type == "message/rfc822"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="message.eml"'
        raw = await resp.read()
    eml = BytesParser(policy=policy.default).parsebytes(raw)
    assert eml["Subject"] == "mail 0"
    assert eml["From"] == "Example <noreply@example.com>"
    assert eml["To"] == "alice@mail.td"
    assert eml.get_body(("plain",)).get_content().strip() == "hello"  # type: ignore[union-attr]
    assert eml.get_body(("html",)).get_content().strip() == "<p>hello</p>"  # type: ignore[union-attr]
    [part] = list(eml.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("doc.pdf", b"%PDF-1.4 tiny")
    _, detail = await call(http, "GET", inbox(alice, f"/{message_id}"))
    assert detail["size"] == len(raw)


async def test_attachment_download_and_bad_index(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    files = [("a.txt", "text/plain", b"first"), ("b.png", "image/png", b"\x89PNG")]
    message_id = add(mail_sim, alice, attachments=files)
    async with http.get(inbox(alice, f"/{message_id}/attachments/1")) as resp:
        assert (resp.status, resp.content_type, await resp.read()) == (200, "image/png", b"\x89PNG")
        assert resp.headers["Content-Disposition"] == 'attachment; filename="b.png"'
    for index in ("2", "-1", "x"):
        assert await call(http, "GET", inbox(alice, f"/{message_id}/attachments/{index}")) == (
            400,
            {"error": "invalid_index"},
        )


# Marking read and deleting.


async def test_mark_one_read_is_idempotent(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    message_id = add(mail_sim, alice)
    for _ in range(2):
        assert await call(http, "PUT", inbox(alice, f"/{message_id}/read")) == (204, None)
    assert mail_sim.message(message_id).is_read
    _, listing = await call(http, "GET", inbox(alice))
    assert listing["messages"][0]["is_read"] is True


async def test_batch_read(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    ids = [add(mail_sim, alice, n) for n in range(5)]
    mail_sim.message(ids[0]).is_read = True
    path = inbox(alice, "/read")
    batch = {"ids": [*ids[:3], "unknown-id"]}
    assert await call(http, "PUT", path, json=batch) == (200, {"updated": 2})
    assert await call(http, "PUT", path, json={"all": True}) == (200, {"updated": 2})
    assert await call(http, "PUT", path, json={"all": True}) == (200, {"updated": 0})
    assert all(mail_sim.message(i).is_read for i in ids)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"ids": [f"id{n}" for n in range(201)]}, "too_many_ids"),
        ({"ids": "abc"}, "invalid_request"),
        ({"all": False}, "invalid_request"),
        ([1, 2], "invalid_request"),
        ("not json", "invalid_request"),
    ],
)
async def test_batch_read_refusals(
    http: aiohttp.ClientSession, alice: SimAccount, payload: Any, error: str
) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    status, body = await call(http, "PUT", inbox(alice, "/read"), data=data)
    assert (status, body) == (400, {"error": error})


async def test_batch_read_accepts_200_ids(http: aiohttp.ClientSession, alice: SimAccount) -> None:
    ids = {"ids": [f"id{n}" for n in range(200)]}
    assert await call(http, "PUT", inbox(alice, "/read"), json=ids) == (200, {"updated": 0})


async def test_delete_is_soft(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    kept, deleted = add(mail_sim, alice, 0), add(mail_sim, alice, 1)
    assert await call(http, "DELETE", inbox(alice, f"/{deleted}")) == (204, None)
    assert await call(http, "GET", inbox(alice, f"/{deleted}")) == (404, {"error": "not_found"})
    assert await call(http, "DELETE", inbox(alice, f"/{deleted}")) == (404, {"error": "not_found"})
    _, listing = await call(http, "GET", inbox(alice))
    assert [m["id"] for m in listing["messages"]] == [kept]
    assert mail_sim.message(deleted).deleted


# Rate limit and quota.


async def test_rate_limit_per_token() -> None:
    clock = FakeClock()
    async with MailTdSim(clock=clock) as sim:
        account = sim.add_account("alice@mail.td")
        headers = {"Authorization": f"Bearer {account.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as http:
            assert await statuses(http, inbox(account), 7) == [200] * 4 + [429] * 3
            async with http.get(inbox(account)) as refused:
                assert await refused.json() == {"error": "rate_limit_exceeded"}
                assert "Retry-After" not in refused.headers
            clock.value += 0.999
            assert await statuses(http, inbox(account)) == [429]
            clock.value += 0.001
            assert await statuses(http, inbox(account), 5) == [200] * 4 + [429]
    assert sim.max_requests_in_window(1.0, account.token) == 9  # 8 at t, 1 at t+0.999


async def test_pro_rate_limit_per_account() -> None:
    async with MailTdSim(clock=FakeClock()) as sim:
        pro = sim.add_account("pro@mail.td")
        pro.rate_limit = 10
        headers = {"Authorization": f"Bearer {pro.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as http:
            assert await statuses(http, inbox(pro), 11) == [200] * 10 + [429]


async def test_rate_limit_with_the_real_clock() -> None:
    async with MailTdSim(rate_limit=4) as sim:
        account = sim.add_account("alice@mail.td")
        headers = {"Authorization": f"Bearer {account.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as http:
            burst = await statuses(http, inbox(account), 8)
            assert burst.count(429) >= 1
            await asyncio.sleep(1.05)
            assert await statuses(http, inbox(account)) == [200]
    assert sim.max_requests_in_window() == 8


async def test_unauthenticated_limit_is_per_ip() -> None:
    async with MailTdSim(clock=FakeClock()) as sim, aiohttp.ClientSession(sim.base_url) as anon:
        seen = await statuses(anon, "/api/accounts/x/messages", 9)
    assert seen == [401] * 8 + [429]


async def test_monthly_quota() -> None:
    month = [T0]
    async with MailTdSim(rate_limit=1000, quota=2, now=lambda: month[0]) as sim:
        account = sim.add_account("alice@mail.td")
        headers = {"Authorization": f"Bearer {account.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as http:
            assert await statuses(http, inbox(account), 2) == [200, 200]
            assert await call(http, "GET", inbox(account)) == (429, {"error": "quota_exceeded"})
            sim.quota_code = "ops_quota_exceeded"
            assert await call(http, "GET", inbox(account)) == (429, {"error": "ops_quota_exceeded"})
            month[0] = T0 + timedelta(days=31)
            assert await statuses(http, inbox(account)) == [200]
            account.ops_limit = 1
            assert await call(http, "GET", inbox(account)) == (429, {"error": "ops_quota_exceeded"})


# Faults.


@pytest.mark.parametrize(
    ("kind", "params", "status", "body"),
    [
        ("status", {"status": 503}, 503, {"error": "service_unavailable"}),
        ("status", {"status": 500, "error": "boom"}, 500, {"error": "boom"}),
        ("rate_limited", {}, 429, {"error": "rate_limit_exceeded"}),
        ("quota", {}, 429, {"error": "quota_exceeded"}),
        ("expired", {}, 410, {"error": "gone"}),
    ],
)
async def test_json_faults(
    mail_sim: MailTdSim,
    alice: SimAccount,
    http: aiohttp.ClientSession,
    kind: str,
    params: dict[str, Any],
    status: int,
    body: dict[str, str],
) -> None:
    mail_sim.inject(kind, count=2, **params)
    for _ in range(2):
        assert await call(http, "GET", inbox(alice)) == (status, body)
    assert await call(http, "GET", inbox(alice)) == (200, {"messages": [], "page": 1})


async def test_html_fault_looks_like_a_proxy(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    mail_sim.inject("html")
    async with http.get(inbox(alice)) as resp:
        assert (resp.status, resp.content_type) == (502, "text/html")
        assert "502 Bad Gateway" in await resp.text()
        with pytest.raises(aiohttp.ContentTypeError):
            await resp.json()


async def test_truncated_fault_is_broken_json(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    add(mail_sim, alice)
    mail_sim.inject("truncated")
    async with http.get(inbox(alice)) as resp:
        assert (resp.status, resp.content_type) == (200, "application/json")
        with pytest.raises(json.JSONDecodeError):
            await resp.json()


async def test_reset_faults_are_connection_errors(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    mail_sim.inject("reset")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(inbox(alice)) as resp:
            await resp.json()
    # aiohttp retries once by itself when the drop comes before the response head.
    mail_sim.inject("reset", count=2, before_headers=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await statuses(http, inbox(alice))
    assert [r.status for r in mail_sim.requests] == [0, 0, 0]
    assert await statuses(http, inbox(alice)) == [200]


async def test_latency_fault(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    mail_sim.inject("latency", seconds=0.5)
    with pytest.raises(TimeoutError):
        async with http.get(inbox(alice), timeout=aiohttp.ClientTimeout(total=0.1)):
            pass
    mail_sim.inject("latency", seconds=0.1)
    started = time.monotonic()
    assert await statuses(http, inbox(alice)) == [200]
    assert time.monotonic() - started >= 0.1


async def test_fault_filters(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    message_id = add(mail_sim, alice)
    mail_sim.inject("expired", method="GET", path="/messages/")
    assert await statuses(http, inbox(alice)) == [200]
    assert await call(http, "PUT", inbox(alice, f"/{message_id}/read")) == (204, None)
    assert await statuses(http, inbox(alice, f"/{message_id}")) == [410]
    assert await statuses(http, inbox(alice, f"/{message_id}")) == [200]
    with pytest.raises(ValueError, match="unknown fault"):
        mail_sim.inject("meteor")


async def test_down_mode(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    mail_sim.set_down(True)
    for _ in range(3):
        assert await call(http, "GET", inbox(alice)) == (503, {"error": "service_unavailable"})
    mail_sim.set_down(False)
    assert await statuses(http, inbox(alice)) == [200]


# The request log and the HTTP control API.


async def test_request_log(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    await statuses(http, inbox(alice) + "?page=2")
    [entry] = mail_sim.requests
    assert (entry.method, entry.path, entry.query) == ("GET", inbox(alice), "page=2")
    assert (entry.status, entry.token) == (200, alice.token)


async def test_control_api(mail_sim: MailTdSim) -> None:
    async with aiohttp.ClientSession(mail_sim.base_url) as ctl:
        status, account = await call(ctl, "POST", "/_sim/accounts", json={"address": "c@mail.td"})
        assert status == 201
        assert set(account) == {"id", "address", "token"}
        mail: dict[str, Any] = {
            "account": "c@mail.td",
            "sender": "s@x.example",
            "subject": "hi",
            "html_body": "<b>x",
        }
        mail["created_at"] = "2025-01-15T10:30:00Z"
        mail["attachments"] = [
            {"filename": "a", "content_type": "text/plain", "content_base64": "eA=="}
        ]
        status, created = await call(ctl, "POST", "/_sim/messages", json=mail)
        assert status == 201
        stored = mail_sim.message(created["id"])
        assert (stored.created_at, stored.attachments) == (T0, [("a", "text/plain", b"x")])
        fault = {"kind": "status", "status": 502}
        assert (await call(ctl, "POST", "/_sim/faults", json=fault))[0] == 201
        assert await call(ctl, "POST", "/_sim/expire", json={"id": created["id"]}) == (204, None)
        headers = {"Authorization": f"Bearer {account['token']}"}
        path = f"/api/accounts/{account['id']}/messages/{created['id']}"
        assert (await call(ctl, "GET", path, headers=headers))[0] == 502
        assert (await call(ctl, "GET", path, headers=headers))[0] == 410
        await call(ctl, "POST", "/_sim/down", json={"down": True})
        assert (await call(ctl, "GET", path, headers=headers))[0] == 503
        await call(ctl, "POST", "/_sim/down", json={"down": False})
        _, seeded = await call(ctl, "POST", "/_sim/seed", json={"account": "c@mail.td", "count": 3})
        assert len(seeded["ids"]) == 3
        _, window = await call(ctl, "GET", "/_sim/requests/max_window", params={"window": "1.0"})
        assert window == {"max": 3, "requests": 3}
        status, body = await call(ctl, "POST", "/_sim/faults", json={"kind": "meteor"})
        assert (status, body["error"]) == (400, "invalid_request")


# Realistic mail for the demo.


def test_realistic_mail(mail_sim: MailTdSim, alice: SimAccount) -> None:
    ids = seed_realistic(mail_sim, alice, 60, random.Random(7))
    mails = [mail_sim.message(i) for i in ids]
    assert [m.created_at for m in mails] == sorted(m.created_at for m in mails)
    verifications = [m for m in mails if "verif" in m.subject.lower()]
    assert verifications
    for mail in verifications:
        for body in (mail.text_body, mail.html_body):
            assert body is not None
            assert re.search(r"\b\d{6}\b", body)
            assert re.search(r"https://\S+/verify\?token=\w+", body)
    assert any(m.text_body is None and m.html_body for m in mails)
    assert any(a[1] == "application/pdf" for m in mails for a in m.attachments)
    assert set(realistic_message(random.Random(1))) >= {"sender", "subject", "from_name"}


# Request counts, per kind.


async def test_requests_are_counted_per_kind_refused_ones_too(
    mail_sim: MailTdSim, alice: SimAccount, http: aiohttp.ClientSession
) -> None:
    mid = add(mail_sim, alice)
    await call(http, "GET", inbox(alice))
    await call(http, "GET", inbox(alice, "?page=2"))
    await call(http, "GET", inbox(alice, f"/{mid}"))
    await call(http, "PUT", inbox(alice, f"/{mid}/read"))
    async with aiohttp.ClientSession(mail_sim.base_url) as anon:
        assert (await call(anon, "GET", inbox(alice)))[0] == 401
        assert await call(anon, "GET", "/_sim/requests/counts") == (200, {
            "messages.list": 3, "messages.detail": 1,
            "PUT /api/accounts/{account_id}/messages/{id}/read": 1,
        })  # fmt: skip
