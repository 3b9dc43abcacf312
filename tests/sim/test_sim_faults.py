"""The generic faults of bot/sim/base.py (empty, rewrite, before, headers, a path's end),
over real HTTP against the Mail.td simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.sim.mailtd import MailTdSim, SimAccount
from tests.sim.shared import bearer_session


@pytest.fixture
async def sim() -> AsyncIterator[MailTdSim]:
    async with MailTdSim(rate_limit=1000) as simulator:
        yield simulator


@pytest.fixture
def box(sim: MailTdSim) -> SimAccount:
    sim.add_account("a@mail.td")
    return sim.add_account("b@mail.td")


@pytest.fixture
async def http(sim: MailTdSim, box: SimAccount) -> AsyncIterator[aiohttp.ClientSession]:
    async with bearer_session(sim.base_url, box.token) as session:
        yield session


LIST = "/api/accounts/b@mail.td/messages"


@pytest.mark.parametrize("status", [200, 204])
async def test_empty_answers_with_no_body(
    sim: MailTdSim, http: aiohttp.ClientSession, status: int
) -> None:
    sim.inject("empty", status=status, headers={"Retry-After": "2"})
    async with http.get(LIST) as resp:
        assert (resp.status, await resp.read(), resp.headers["Retry-After"]) == (status, b"", "2")


async def test_rewrite_changes_the_real_answer_and_before_runs_first(
    sim: MailTdSim, box: SimAccount, http: aiohttp.ClientSession
) -> None:
    seen: list[str] = []

    def add(request: web.Request) -> None:
        seen.append(request.path)
        sim.add_message(box, sender="s@example.com", subject="late")

    def garble(data: Any) -> Any:
        return {**data, "messages": [{**m, "id": {"id": m["id"]}} for m in data["messages"]]}

    sim.inject("before", path="/messages$", fn=add)
    async with http.get(LIST) as resp:
        assert [m["subject"] for m in (await resp.json())["messages"]] == ["late"]
    sim.inject("rewrite", path="/messages$", fn=garble)
    async with http.get(LIST) as resp:
        (entry,) = (await resp.json())["messages"]
    assert seen == [LIST] and isinstance(entry["id"], dict) and resp.status == 200


async def test_a_path_ending_in_dollar_matches_only_the_end(
    sim: MailTdSim, box: SimAccount, http: aiohttp.ClientSession
) -> None:
    mid = sim.add_message(box, sender="s@example.com", subject="x", text_body="b")
    sim.inject("status", status=500, path="/messages$")
    async with http.get(f"{LIST}/{mid}") as resp:
        assert resp.status == 200  # a detail is not the list
    async with http.get(LIST) as resp:
        assert resp.status == 500
