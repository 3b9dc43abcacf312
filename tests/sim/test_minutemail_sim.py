"""The MinuteMail simulator, driven over real HTTP the way a client sees it."""

from __future__ import annotations

import base64
import json
import os
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.sim.minutemail import (
    MinuteMailSim,
    SimKey,
    SimMailbox,
    demo,
    new_api_key,
    seed_realistic,
)
from bot.sources.minutemail import looks_like_html
from tests.sim.shared import bearer_session, call, statuses

T0 = datetime(2024, 1, 18, 0, 15, tzinfo=UTC)
DOC_MAIL_FIELDS = {"id", "mailboxId", "sender", "subject", "body", "hasAttachments",
                   "attachments", "receivedAt"}  # fmt: skip
DOC_MAILBOX_FIELDS = {"id", "alias", "domain", "address", "recoverable", "tag", "owner",
                      "messageCount", "expiresAt", "createdAt"}  # fmt: skip


class Clocks:
    """Wall time for expiry and a monotonic clock for the per-second limit, moved by hand."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def clock(self) -> float:
        return self.mono


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
async def mm(clocks: Clocks) -> AsyncIterator[MinuteMailSim]:
    async with MinuteMailSim(now=clocks.now, clock=clocks.clock) as simulator:
        yield simulator


@pytest.fixture
def key(mm: MinuteMailSim) -> SimKey:
    return mm.add_key()


@pytest.fixture
def box(mm: MinuteMailSim, key: SimKey) -> SimMailbox:
    return mm.add_mailbox(key, minutes=10)


@pytest.fixture
async def http(mm: MinuteMailSim, key: SimKey) -> AsyncIterator[aiohttp.ClientSession]:
    async with bearer_session(mm.base_url, key.key) as session:
        yield session


def mails(box: SimMailbox, tail: str = "") -> str:
    return f"/v1/mailboxes/{box.id}/mails{tail}"


def add(mm: MinuteMailSim, box: SimMailbox, n: int = 0, **kwargs: Any) -> str:
    fields: dict[str, Any] = {"sender": "sender@example.com", "subject": f"mail {n}"}
    fields.update(body="This is a test email.", received_at=T0 + timedelta(seconds=n))
    return mm.add_mail(box, **{**fields, **kwargs})


# Keys, authentication and access.


def test_keys_look_like_the_real_ones() -> None:
    assert re.fullmatch(r"mmak_[A-Z2-7]{52}", new_api_key())


@pytest.mark.parametrize("header", [None, "Bearer mmak_NOPE", "Basic abc", "Bearer "])
async def test_a_missing_or_invalid_key_is_401(
    mm: MinuteMailSim, box: SimMailbox, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with (
        aiohttp.ClientSession(mm.base_url, headers=headers) as anon,
        anon.get(mails(box)) as resp,
    ):
        assert resp.status == 401
        assert "X-RateLimit-Remaining" not in resp.headers
        body = await resp.json()
    assert body == {"error": "Unauthorized", "message": "Invalid or missing API key"}


async def test_an_expired_or_revoked_key_is_401(
    mm: MinuteMailSim, clocks: Clocks, key: SimKey, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    key.expires_at = T0 + timedelta(minutes=1)
    assert await statuses(http, mails(box)) == [200]
    clocks.wall += timedelta(minutes=1)
    assert await statuses(http, mails(box)) == [401]
    key.expires_at = None
    mm.revoke_key(key)
    assert await statuses(http, mails(box)) == [401]


async def test_origin_restrictions(mm: MinuteMailSim) -> None:
    key = mm.add_key(allowed_domains=["app.example.com"])
    box = mm.add_mailbox(key)
    auth = {"Authorization": f"Bearer {key.key}"}
    cases = [
        ({}, 200),  # a server-side client sends no Origin
        ({"Origin": "https://app.example.com"}, 200),
        ({"Origin": "https://eu.app.example.com"}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Referer": "https://evil.example/page"}, 403),
    ]
    async with aiohttp.ClientSession(mm.base_url) as http:
        for extra, status in cases:
            got, body = await call(http, "GET", mails(box), headers={**auth, **extra})
            assert got == status, extra
        assert body["message"] == "Origin not allowed for this API key"
    anywhere = mm.add_key()
    headers = {"Authorization": f"Bearer {anywhere.key}", "Origin": "https://evil.example"}
    async with aiohttp.ClientSession(mm.base_url, headers=headers) as http:
        assert await statuses(http, mails(mm.add_mailbox(anywhere))) == [200]


async def test_another_users_mailbox_is_403_an_unknown_one_404(
    mm: MinuteMailSim, http: aiohttp.ClientSession
) -> None:
    foreign = mm.add_mailbox(mm.add_key())
    assert await call(http, "GET", mails(foreign)) == (
        403,
        {"error": "Forbidden", "message": "You don't have access to this mailbox"},
    )
    nowhere = SimMailbox("nope", "x", "minutemail.cc", "o", T0, T0)
    assert await call(http, "GET", mails(nowhere)) == (
        404,
        {"error": "Not Found", "message": "Mailbox not found"},
    )


async def test_a_second_key_of_the_same_user_sees_the_mailbox(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox
) -> None:
    other = mm.add_key(owner=key.owner)
    async with aiohttp.ClientSession(
        mm.base_url, headers={"Authorization": f"Bearer {other.key}"}
    ) as http:
        assert await statuses(http, mails(box)) == [200]


# Mailboxes: creation, expiry, deletion.


async def test_create_a_mailbox(
    mm: MinuteMailSim, key: SimKey, http: aiohttp.ClientSession
) -> None:
    wanted = {"domain": "minutemail.cc", "expiresIn": 15, "recoverable": False}
    status, created = await call(http, "POST", "/v1/mailboxes", json=wanted)
    assert status == 201 and set(created) == DOC_MAILBOX_FIELDS
    assert created["address"] == f"{created['alias']}@minutemail.cc"
    assert (created["owner"], created["messageCount"]) == (key.owner, 0)
    assert created["createdAt"] == "2024-01-18T00:15:00Z"
    assert created["expiresAt"] == "2024-01-18T00:30:00Z"
    assert await call(http, "GET", f"/v1/mailboxes/{created['id']}") == (200, created)
    _, listed = await call(http, "GET", "/v1/mailboxes", params={"address": created["address"]})
    assert listed == {"items": [created]}


@pytest.mark.parametrize(
    "body",
    [
        {"expiresIn": 0},
        {"expiresIn": 61},
        {"expiresIn": "15"},
        {"expiresIn": True},
        {},
        {"expiresIn": 5, "domain": "gmail.com"},
        {"expiresIn": 5, "recoverable": True},
        {"expiresIn": 5, "alias": "Not Valid!"},
    ],
)
async def test_create_refusals(http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
    status, answer = await call(http, "POST", "/v1/mailboxes", json=body)
    assert (status, answer["error"]) == (400, "Bad Request")


async def test_alias_conflict_and_mailbox_limit(mm: MinuteMailSim, key: SimKey) -> None:
    mm.max_mailboxes = 2
    async with aiohttp.ClientSession(
        mm.base_url, headers={"Authorization": f"Bearer {key.key}"}
    ) as http:
        body = {"expiresIn": 5, "alias": "qa"}
        assert (await call(http, "POST", "/v1/mailboxes", json=body))[0] == 201
        assert (await call(http, "POST", "/v1/mailboxes", json=body))[0] == 409
        assert (await call(http, "POST", "/v1/mailboxes", json={"expiresIn": 5}))[0] == 201
        status, answer = await call(http, "POST", "/v1/mailboxes", json={"expiresIn": 5})
    assert (status, answer["message"]) == (429, "Quota exceeded (active or archived mailbox limit)")


async def test_a_mailbox_vanishes_when_it_expires(
    mm: MinuteMailSim, clocks: Clocks, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mid = add(mm, box)
    clocks.wall += timedelta(minutes=9, seconds=59)
    assert await statuses(http, mails(box)) == [200]
    clocks.wall += timedelta(seconds=1)
    for path in (mails(box), mails(box, f"/{mid}"), f"/v1/mailboxes/{box.id}"):
        assert await call(http, "GET", path) == (
            404,
            {"error": "Not Found", "message": "Mailbox not found"},
        )
    assert await call(http, "GET", "/v1/mailboxes") == (200, {"items": []})


async def test_expire_now_and_delete(
    mm: MinuteMailSim, key: SimKey, http: aiohttp.ClientSession
) -> None:
    one, two = mm.add_mailbox(key), mm.add_mailbox(key)
    mm.expire(one)
    assert await statuses(http, mails(one)) == [404]
    assert await call(http, "DELETE", f"/v1/mailboxes/{two.id}") == (204, None)
    assert await statuses(http, mails(two)) == [404]


# Mails.


async def test_list_and_get_mails_in_the_documented_shape(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    old = add(mm, box, 0)
    new = add(mm, box, 1, attachments=[("document.pdf", "application/pdf", b"%PDF" * 10)])
    status, listing = await call(http, "GET", mails(box))
    assert status == 200 and list(listing) == ["items"]
    assert [m["id"] for m in listing["items"]] == [new, old]  # newest first
    first = listing["items"][0]
    assert set(first) == DOC_MAIL_FIELDS
    assert (first["mailboxId"], first["hasAttachments"], first["receivedAt"]) == (
        box.id,
        True,
        "2024-01-18T00:15:01Z",
    )
    assert first["attachments"] == [
        {"id": first["attachments"][0]["id"], "name": "document.pdf", "sizeBytes": 40}
    ]
    assert await call(http, "GET", mails(box, f"/{new}")) == (200, first)
    assert await call(http, "GET", mails(box, "/unknown")) == (
        404,
        {"error": "Not Found", "message": "Mail not found"},
    )


async def test_delete_one_mail(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mid = add(mm, box)
    assert await call(http, "DELETE", mails(box, f"/{mid}")) == (204, None)
    assert (await call(http, "DELETE", mails(box, f"/{mid}")))[0] == 404
    assert await call(http, "GET", mails(box)) == (200, {"items": []})


async def test_bulk_delete_skips_unknown_ids(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    ids = [add(mm, box, n) for n in range(3)]
    body = {"ids": [ids[0], ids[1], "f1e2d3c4-0000-0000-0000-000000000000"]}
    assert await call(http, "DELETE", mails(box), json=body) == (204, None)
    _, listing = await call(http, "GET", mails(box))
    assert [m["id"] for m in listing["items"]] == [ids[2]]


@pytest.mark.parametrize(
    "payload", [{"ids": []}, {"ids": "abc"}, {"ids": ["ok", 7]}, {"ids": ["ok", ""]}, [1], "x"]
)
async def test_bulk_delete_refusals_are_atomic(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession, payload: Any
) -> None:
    ids = [add(mm, box, n) for n in range(2)]
    if isinstance(payload, dict) and isinstance(payload["ids"], list) and payload["ids"]:
        payload = {"ids": [ids[0] if i == "ok" else i for i in payload["ids"]]}
    data = payload if isinstance(payload, str) else json.dumps(payload)
    status, body = await call(http, "DELETE", mails(box), data=data)
    assert (status, body["error"]) == (400, "Bad Request")
    assert not any(mm.mail(i).deleted for i in ids)


# Attachments.


async def test_attachments_list_download_and_delete(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    files = [("a.pdf", "application/pdf", b"%PDF-1.4"), ("b.png", "image/png", b"\x89PNG\r\n")]
    files.append(("c.txt", "text/plain", b"three"))
    mid = add(mm, box, attachments=files)
    status, listing = await call(http, "GET", mails(box, f"/{mid}/attachments"))
    assert status == 200
    a, b, c = listing["items"]
    assert a == {"id": a["id"], "mailId": mid, "name": "a.pdf", "contentType": "application/pdf",
                 "sizeBytes": 8}  # fmt: skip
    status, got = await call(http, "GET", mails(box, f"/{mid}/attachments/{b['id']}"))
    assert status == 200 and set(got) == {"id", "name", "contentType", "data", "sizeBytes"}
    assert (got["contentType"], base64.b64decode(got["data"])) == ("image/png", b"\x89PNG\r\n")
    path = mails(box, f"/{mid}/attachments")
    assert await call(http, "DELETE", f"{path}/{a['id']}") == (204, None)
    assert (await call(http, "GET", f"{path}/{a['id']}"))[0] == 404
    assert (await call(http, "DELETE", f"{path}/{a['id']}"))[0] == 404
    assert await call(http, "DELETE", path, json={"ids": [b["id"], "unknown"]}) == (204, None)
    _, mail = await call(http, "GET", mails(box, f"/{mid}"))
    assert [x["name"] for x in mail["attachments"]] == ["c.txt"] and mail["hasAttachments"]
    assert await call(http, "DELETE", path, json={"ids": [c["id"]]}) == (204, None)
    _, mail = await call(http, "GET", mails(box, f"/{mid}"))
    assert (mail["attachments"], mail["hasAttachments"]) == ([], False)
    assert (await call(http, "DELETE", path, json={"ids": []}))[0] == 400


async def test_deleting_a_mail_deletes_its_attachments(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mid = add(mm, box, attachments=[("a.txt", "text/plain", b"a")])
    assert await call(http, "DELETE", mails(box), json={"ids": [mid]}) == (204, None)
    assert (await call(http, "GET", mails(box, f"/{mid}/attachments")))[0] == 404


# Quota and the optional per-second limit.


async def test_the_quota_counts_down_in_every_answer(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox
) -> None:
    mm.quota = 3
    seen = []
    async with aiohttp.ClientSession(
        mm.base_url, headers={"Authorization": f"Bearer {key.key}"}
    ) as http:
        for path in (mails(box), mails(box, "/nope"), mails(box), mails(box)):
            async with http.get(path) as resp:
                seen.append((resp.status, resp.headers["X-RateLimit-Remaining"]))
        assert await call(http, "GET", mails(box)) == (
            429,
            {"error": "Too Many Requests", "message": "Quota exceeded"},
        )
    assert seen == [(200, "2"), (404, "1"), (200, "0"), (429, "0")]
    assert mm.remaining(key.owner) == 0


async def test_the_per_second_limit_is_off_by_default_and_optional(
    mm: MinuteMailSim, clocks: Clocks, key: SimKey, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    assert await statuses(http, mails(box), 6) == [200] * 6
    mm.rate_limit = 2
    clocks.mono += 5
    assert await statuses(http, mails(box), 3) == [200, 200, 429]
    async with http.get(mails(box)) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "1")
        assert int(resp.headers["X-RateLimit-Remaining"]) > 0
        assert (await resp.json())["message"] == "Rate limit exceeded"
    clocks.mono += 1.0
    assert await statuses(http, mails(box), 3) == [200, 200, 429]
    assert mm.max_requests_in_window(1.0, key=key.key) == 6  # the unlimited burst at the start
    assert len(mm.requests) == 13  # refused ones are logged too


# Faults.


@pytest.mark.parametrize(
    ("kind", "params", "status", "body"),
    [
        ("status", {"status": 503}, 503, {"error": "Service Unavailable",
                                          "message": "Service Unavailable"}),
        ("status", {"status": 500, "message": "boom"}, 500, {"error": "Internal Server Error",
                                                             "message": "boom"}),
        ("status", {"status": 401, "body": {}}, 401, {}),
        ("quota", {}, 429, {"error": "Too Many Requests", "message": "Quota exceeded"}),
        ("rate_limited", {}, 429, {"error": "Too Many Requests", "message": "Rate limit exceeded"}),
    ],
)  # fmt: skip
async def test_json_faults(
    mm: MinuteMailSim,
    box: SimMailbox,
    http: aiohttp.ClientSession,
    kind: str,
    params: dict[str, Any],
    status: int,
    body: dict[str, str],
) -> None:
    mm.inject(kind, count=2, **params)
    for _ in range(2):
        assert await call(http, "GET", mails(box)) == (status, body)
    assert await call(http, "GET", mails(box)) == (200, {"items": []})


async def test_quota_and_rate_faults_carry_their_headers(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mm.inject("quota")
    mm.inject("rate_limited", remaining=42)
    async with http.get(mails(box)) as resp:
        assert resp.headers["X-RateLimit-Remaining"] == "0"
    async with http.get(mails(box)) as resp:
        assert (resp.headers["X-RateLimit-Remaining"], resp.headers["Retry-After"]) == ("42", "1")


async def test_page_and_plain_faults(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mm.inject("html")
    mm.inject("status", status=403, body="Forbidden")
    async with http.get(mails(box)) as resp:
        assert (resp.status, resp.content_type) == (502, "text/html")
        assert "502 Bad Gateway" in await resp.text()
    async with http.get(mails(box)) as resp:
        assert (resp.status, resp.content_type, await resp.text()) == (
            403,
            "text/plain",
            "Forbidden",
        )


async def test_truncated_and_reset_faults(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    add(mm, box)
    mm.inject("truncated")
    async with http.get(mails(box)) as resp:
        assert (resp.status, resp.content_type) == (200, "application/json")
        with pytest.raises(json.JSONDecodeError):
            await resp.json()
    mm.inject("reset")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(mails(box)) as resp:
            await resp.json()
    mm.inject("reset", count=2, before_headers=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await statuses(http, mails(box))
    assert [r.status for r in mm.requests] == [200, 0, 0, 0]


async def test_latency_fault(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mm.inject("latency", seconds=0.3)
    with pytest.raises(TimeoutError):
        async with http.get(mails(box), timeout=aiohttp.ClientTimeout(total=0.1)):
            pass


async def test_fault_filters_and_down(
    mm: MinuteMailSim, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    mid = add(mm, box)
    mm.inject("status", status=500, method="DELETE", path="/mails/")
    assert await statuses(http, mails(box)) == [200]
    assert (await call(http, "DELETE", mails(box, f"/{mid}")))[0] == 500
    assert (await call(http, "DELETE", mails(box, f"/{mid}")))[0] == 204
    with pytest.raises(ValueError, match="unknown fault"):
        mm.inject("meteor")
    mm.set_down(True)
    assert (await call(http, "GET", mails(box)))[0] == 503
    mm.set_down(False)
    assert await statuses(http, mails(box)) == [200]


# The request log and the HTTP control API.


async def test_request_log(
    mm: MinuteMailSim, key: SimKey, box: SimMailbox, http: aiohttp.ClientSession
) -> None:
    await statuses(http, mails(box) + "?x=1")
    [entry] = mm.requests
    assert (entry.method, entry.path, entry.query, entry.status, entry.token) == (
        "GET",
        mails(box),
        "x=1",
        200,
        key.key,
    )


async def test_control_api(mm: MinuteMailSim) -> None:
    async with aiohttp.ClientSession(mm.base_url) as ctl:
        status, key = await call(ctl, "POST", "/_sim/keys", json={"allowed_domains": ["a.b"]})
        assert status == 201 and set(key) == {"key", "owner"}
        status, box = await call(ctl, "POST", "/_sim/mailboxes", json={"key": key["key"]})
        assert status == 201 and box["owner"] == key["owner"]
        mail = {"mailbox": box["id"], "sender": "s@x.example", "subject": "hi", "body": "<p>x</p>",
                "received_at": "2024-01-18T00:15:00Z",
                "attachments": [{"name": "a", "content_type": "text/plain", "content_base64": "eA=="}]}  # fmt: skip
        status, created = await call(ctl, "POST", "/_sim/mails", json=mail)
        assert status == 201
        stored = mm.mail(created["id"])
        assert (stored.received_at, stored.attachments[0].data) == (T0, b"x")
        _, seeded = await call(ctl, "POST", "/_sim/seed", json={"mailbox": box["id"], "count": 3})
        assert len(seeded["ids"]) == 3
        headers = {"Authorization": f"Bearer {key['key']}"}
        path = f"/v1/mailboxes/{box['id']}/mails"
        assert (await call(ctl, "POST", "/_sim/faults", json={"kind": "status", "status": 502}))[
            0
        ] == 201
        assert (await call(ctl, "GET", path, headers=headers))[0] == 502
        _, listing = await call(ctl, "GET", path, headers=headers)
        assert len(listing["items"]) == 4
        await call(ctl, "POST", "/_sim/down", json={"down": True})
        assert (await call(ctl, "GET", path, headers=headers))[0] == 503
        await call(ctl, "POST", "/_sim/down", json={"down": False})
        assert await call(ctl, "POST", "/_sim/expire", json={"mailbox": box["id"]}) == (204, None)
        assert (await call(ctl, "GET", path, headers=headers))[0] == 404
        _, window = await call(ctl, "GET", "/_sim/requests/max_window", params={"window": "60"})
        assert window == {"max": 4, "requests": 4}
        status, body = await call(ctl, "POST", "/_sim/faults", json={"kind": "meteor"})
        assert (status, body["error"]) == (400, "Bad Request")


# Realistic mail for the demo.


def test_realistic_mail_mixes_html_and_text(mm: MinuteMailSim, box: SimMailbox) -> None:
    ids = seed_realistic(mm, box, 40, random.Random(3))
    found = [mm.mail(i) for i in ids]
    assert [m.received_at for m in found] == sorted(m.received_at for m in found)
    kinds = {looks_like_html(m.body) for m in found}
    assert kinds == {True, False}
    assert any(a.content_type == "application/pdf" for m in found for a in m.attachments)
    assert any(re.search(r"\b\d{6}\b", m.body) for m in found if "verif" in m.subject.lower())


async def test_demo_announces_itself_and_adds_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "KEY", "MAILBOX"):
        monkeypatch.setenv(f"INBOXBOT_DEMO_MINUTEMAIL_{name}", "unset")  # restored afterwards
    async with demo(random.Random(1)) as new_mail:
        url = os.environ["INBOXBOT_DEMO_MINUTEMAIL_URL"]
        headers = {"Authorization": f"Bearer {os.environ['INBOXBOT_DEMO_MINUTEMAIL_KEY']}"}
        path = f"/v1/mailboxes/{os.environ['INBOXBOT_DEMO_MINUTEMAIL_MAILBOX']}/mails"
        async with aiohttp.ClientSession(url, headers=headers) as http:
            _, before = await call(http, "GET", path)
            new_mail()
            _, after = await call(http, "GET", path)
    assert len(before["items"]) == 3 and len(after["items"]) == 4
