"""The fault matrix's upstreams: each HTTP upstream feed kind with its simulator started,
one account, its ``accounts:`` entry, how to add a real new item (and take one away), which
requests are its list and its second request (a detail, a page 2), and the shape of the
records that become items (so that a fault can garble them)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.sim.base import SimServer
from bot.sim.e621 import E621Sim
from bot.sim.mailtd import MailTdSim
from bot.sim.minutemail import MinuteMailSim
from bot.sim.rocketchat import RocketChatSim

TIMEOUT = 2.0  # every feed's timeout: (seconds)
RC_PERIOD = 4.0  # the Rocket.Chat simulator's rate window: its X-RateLimit-Reset is this far


# an upstream's own rate answer: (cell, fault kind, params, seconds it asks to wait: 0 when
# it names no time)
OwnRate = tuple[str, str, dict[str, Any], float]


@dataclass
class Upstream:
    """One upstream feed kind as the matrix drives it."""

    name: str  # "e621 dmail"
    sim: SimServer
    account: str  # its entry under ``accounts:``
    add: Callable[[str], str]  # a real new item with this subject: its item id
    remove: Callable[[str], None]  # the item deleted upstream
    list_path: str  # a Fault path of its list request (``$``: the path's end)
    items_path: str  # the request whose records become items (its list, or dm.history)
    next_path: str | None  # its second request (a detail, a room's history), if any
    records: str | None  # the key holding the records in that answer (None: a bare list)
    id_key: str
    time_key: str
    kind: str = "email"
    page: int = 0  # records per page (0: no pages)
    many: Callable[[int], list[str]] | None = None  # that many new items at once
    list_records: str = ""  # where the list is not the item records: its records' key
    list_id: str = ""  # and their id
    own_rate: list[OwnRate] = field(default_factory=list)

    def add_many(self, count: int) -> list[str]:
        return self.many(count) if self.many else [self.add(f"many {n}") for n in range(count)]


def _stamp(rng: random.Random) -> str:
    return f"{rng.randrange(16**6):06x}"


async def mailtd(rng: random.Random) -> Upstream:
    sim = MailTdSim(rate_limit=100)
    await sim.start()
    box = sim.add_account("faults@mail.td")
    box.rate_limit = 100
    account = f"""\
  box:
    type: mailtd
    base_url: {sim.base_url}
    account_id: {box.address}
    token: {box.token}
    every: 1s
    timeout: {TIMEOUT:g}s
    rate: 20
"""

    def add(subject: str) -> str:
        return sim.add_message(box, sender="s@example.com", subject=subject,
                               text_body=f"body {_stamp(rng)}")  # fmt: skip

    def remove(item: str) -> None:
        sim.message(item).deleted = True

    own: list[OwnRate] = [("own 429 rate_limit_exceeded (no header)", "rate_limited", {}, 0.0)]
    return Upstream("Mail.td", sim, account, add, remove, "/messages$", "/messages$",
                    "/messages/", "messages", "id", "created_at", page=30,
                    own_rate=own)  # fmt: skip


async def minutemail(rng: random.Random) -> Upstream:
    sim = MinuteMailSim()
    await sim.start()
    key = sim.add_key()
    box = sim.add_mailbox(key)
    account = f"""\
  mm:
    type: minutemail
    base_url: {sim.base_url}
    api_key: {key.key}
    mailbox_id: {box.id}
    every: 1s
    timeout: {TIMEOUT:g}s
    rate: 20
"""

    def add(subject: str) -> str:
        return sim.add_mail(box, sender="s@example.com", subject=subject, body=_stamp(rng))

    def remove(item: str) -> None:
        sim.mail(item).deleted = True

    own: list[OwnRate] = [
        ("own 429 Retry-After 1 + X-RateLimit-Remaining", "rate_limited", {}, 1.0)
    ]
    return Upstream("MinuteMail", sim, account, add, remove, "/mails$", "/mails$", None,
                    "items", "id", "receivedAt", own_rate=own)  # fmt: skip


async def e621(rng: random.Random, feed: str) -> Upstream:
    sim = E621Sim()
    await sim.start()
    me, bob = sim.add_user("alice"), sim.add_user("bob")
    post = sim.add_post(me)
    search = f", search: {{poster_id: {me.id}}}" if feed == "comments" else ""
    account = f"""\
  furry:
    type: e621
    base_url: {sim.base_url}
    username: {me.name}
    api_key: {me.api_key}
    timeout: {TIMEOUT:g}s
    feeds:
      {feed}: {{every: 1s{search}}}
"""

    def add(subject: str) -> str:
        if feed == "comments":
            return str(sim.add_comment(post, bob, f"{subject} {_stamp(rng)}"))
        return str(sim.send_dmail(bob, me, subject, _stamp(rng)))

    def remove(item: str) -> None:
        if feed == "comments":
            sim.comments[int(item)].is_hidden = True
        else:
            sim.dmails[int(item)].is_deleted = True

    own: list[OwnRate] = [
        ("own edge 503 page (no header)", "rate_limited", {}, 0.0),
        ("own edge 503 page + Retry-After 3", "rate_limited", {"headers": {"Retry-After": "3"}},
         3.0),
    ]  # fmt: skip
    path = f"/{feed}.json"
    kind = "dmail" if feed == "dmails" else "comment"
    return Upstream("e621 dmail" if kind == "dmail" else "e621 comments", sim, account,
                    add, remove, path, path, None, None, "id", "created_at", kind=kind,
                    page=320, own_rate=own)  # fmt: skip


async def rocketchat(rng: random.Random) -> Upstream:
    sim = RocketChatSim(rate_limit=1_000_000, rate_period=RC_PERIOD, realtime=False)
    await sim.start()
    me, bob = sim.add_user("alice", token="alice-pat"), sim.add_user("bob")
    room = sim.direct(me, bob)
    account = f"""\
  chat:
    type: rocketchat
    base_url: {sim.base_url}
    user_id: {me.id}
    token: alice-pat
    every: 1s
    timeout: {TIMEOUT:g}s
    rate: 600/min
"""

    def add(subject: str) -> str:
        return sim.add_message(room, bob, f"{subject} {_stamp(rng)}").id

    def add_many(count: int) -> list[str]:  # distinct times, a millisecond apart
        start = datetime.now(UTC) - timedelta(milliseconds=count + 5)
        return [sim.add_message(room, bob, f"many {n}", ts=start + timedelta(milliseconds=n)).id
                for n in range(count)]  # fmt: skip

    def remove(item: str) -> None:
        sim.messages.pop(item, None)

    own: list[OwnRate] = [("own 429 X-RateLimit-Reset (epoch ms)", "rate_limited", {}, RC_PERIOD)]
    return Upstream("Rocket.Chat", sim, account, add, remove, "subscriptions.get", "dm.history",
                    "dm.history", "messages", "_id", "ts", kind="chat", page=100, many=add_many,
                    list_records="update", list_id="rid", own_rate=own)  # fmt: skip


async def all_upstreams(rng: random.Random) -> list[Upstream]:
    return [await e621(rng, "dmails"), await e621(rng, "comments"), await mailtd(rng),
            await minutemail(rng), await rocketchat(rng)]  # fmt: skip
