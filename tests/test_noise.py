"""Noise control through the pipeline, over HTTP, with an injected clock: groups, quiet
hours, limits and mutes delay, merge or record as muted; nothing is lost or sent twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.app import load, running
from bot.held import Held, Mute
from bot.outbox import waiting
from bot.pipeline import Clock, Pipeline
from bot.sources import Feed
from bot.store import MUTED, PENDING
from tests.conftest import Setup

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)
# what the listing holds: no detail fetched, so no request but the list
SUBJECT = '{sink: hooks, title: "{{ item.subject }}", message: "from {{ item.sender }}"}'
NIGHT = datetime.fromisoformat("2026-12-04T23:00:00+01:00")  # a Friday night in Berlin


class FakeClock(Clock):
    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def time(self) -> float:
        return self.t

    def at(self, moment: datetime) -> None:
        self.t = moment.timestamp()


def rules(notify: str, *, extra: str = "", then: str = "") -> str:
    return f"""\
- name: newsletters
  when: {{kind: email, subject: {{not: {{contains: URGENT}}}}}}
{extra}  notify: [{notify}]
{then}- name: urgent
  when: {{kind: email, subject: {{contains: URGENT}}}}
  notify: [{SUBJECT[:-1]}, priority: urgent}}]
"""


@asynccontextmanager
async def pipeline(
    setup: Setup, clock: FakeClock, rules_text: str, sinks: str = ""
) -> AsyncIterator[Pipeline]:
    config = setup.write(rules_text, rate=2)  # restarts within a second stay in the limit
    if sinks:  # replace the webhook sink's line with one carrying noise control
        text = config.read_text().replace(
            f'  hooks: {{type: webhook, url: "{setup.hook.url}"}}\n',
            f'  hooks: {{type: webhook, url: "{setup.hook.url}", {sinks}}}\n',
        )
        config.write_text(text)
    async with running(load(config), setup.tmp / "state.db", clock) as pipe:
        yield pipe


async def cycle(pipe: Pipeline) -> None:
    await pipe.poll(FEED)
    await pipe.flush()


def mails(setup: Setup, count: int, subject: str = "Newsletter") -> list[str]:
    add = setup.sim.add_message
    return [
        add(setup.account, sender="news@example.com", subject=f"{subject} {n}", text_body="…")
        for n in range(count)
    ]


def sent(setup: Setup) -> list[dict[str, Any]]:
    return setup.hook.received


GROUP = f"{{{SUBJECT[1:-1]}, group: {{by: [account], wait: 30s, interval: 10m, max: 25}}}}"


async def test_forty_newsletters_become_one_digest_then_follow_ups(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ids = mails(setup, 40)
    async with pipeline(setup, clock, rules(GROUP)) as pipe:
        await cycle(pipe)
        assert sent(setup) == []  # the group is open for 30 s
        steps = pipe.store.steps((PENDING,), "hooks")
        assert set(waiting(steps, clock.time()).values()) == {"grouped: 40 items, sends at " +
            datetime.fromtimestamp(clock.time() + 30).astimezone().strftime("%H:%M")}  # fmt: skip
        clock.t += 29
        await cycle(pipe)
        assert sent(setup) == []
        clock.t += 2
        await cycle(pipe)
        (digest,) = sent(setup)
        assert digest["kind"] == "digest" and len(digest["items"]) == 40
        assert sorted(i["item_id"] for i in digest["items"]) == sorted(ids)
        assert digest["title"] == "newsletters: 40 notifications (account inbox)"
        metrics = pipe.metrics.exposition().decode()
        assert 'inboxbot_noise_control_total{sink="hooks",what="grouped"} 40.0' in metrics
        lines = digest["message"].splitlines()
        assert len(lines) == 26 and lines[0] == "• Newsletter 0" and lines[-1] == "and 15 more"
        # three more arrive: they go out one interval after the digest, together
        more = mails(setup, 3, "Later")
        clock.t += 60
        await cycle(pipe)
        clock.t += 538
        await cycle(pipe)
        assert len(sent(setup)) == 1
        clock.t += 3
        await cycle(pipe)
        assert len(sent(setup)) == 2
        assert sorted(i["item_id"] for i in sent(setup)[1]["items"]) == sorted(more)
        # long after: a lone mail opens a new group and goes out as itself
        clock.t += 3600
        (alone,) = mails(setup, 1, "Alone")
        await cycle(pipe)
        clock.t += 31
        await cycle(pipe)
    assert sent(setup)[2]["kind"] == "email" and sent(setup)[2]["item_id"] == alone
    assert setup.hook.duplicates() == 0


async def test_without_grouping_forty_mails_are_forty_notifications(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    mails(setup, 40)
    async with pipeline(setup, clock, rules(SUBJECT)) as pipe:
        await cycle(pipe)
    assert len(sent(setup)) == 40


async def test_an_open_group_survives_a_restart(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ids = mails(setup, 5)
    async with pipeline(setup, clock, rules(GROUP)) as pipe:
        await pipe.poll(FEED)  # planned, the group open; the process then dies
    more = mails(setup, 2, "After restart")
    clock.t += 10
    async with pipeline(setup, clock, rules(GROUP)) as pipe:
        await cycle(pipe)  # the new mails join the open group
        clock.t += 21
        await cycle(pipe)
        await cycle(pipe)
    (digest,) = sent(setup)
    assert sorted(i["item_id"] for i in digest["items"]) == sorted([*ids, *more])


QUIET = 'quiet: {from: "22:00", to: "07:00", tz: Europe/Berlin, except: urgent}'


async def test_quiet_hours_hold_until_morning_and_urgent_breaks_through(setup: Setup) -> None:
    clock = FakeClock(NIGHT)
    ids = mails(setup, 3)
    async with pipeline(setup, clock, rules(SUBJECT), QUIET) as pipe:
        await cycle(pipe)
        assert sent(setup) == []
        steps = pipe.store.steps((PENDING,), "hooks")
        assert set(waiting(steps, clock.time()).values()) == {
            "held: quiet hours until 07:00 Europe/Berlin"
        }
        (urgent,) = mails(setup, 1, "URGENT server down")
        await cycle(pipe)
        assert [b["item_id"] for b in sent(setup)] == [urgent]
        clock.at(datetime.fromisoformat("2026-12-05T06:59:59+01:00"))
        (late,) = mails(setup, 1, "One second before the end")
        await cycle(pipe)
        assert len(sent(setup)) == 1
        clock.at(datetime.fromisoformat("2026-12-05T07:00:00+01:00"))
        await cycle(pipe)
        metrics = pipe.metrics.exposition().decode()
        assert 'inboxbot_noise_control_total{sink="hooks",what="held"} 4.0' in metrics
    digest = sent(setup)[1]
    assert digest["kind"] == "digest" and digest["rule"] == "newsletters"
    assert sorted(i["item_id"] for i in digest["items"]) == sorted([*ids, late])
    assert len(sent(setup)) == 2 and setup.hook.duplicates() == 0


async def test_quiet_hours_one_by_one_and_a_restart_inside_them(setup: Setup) -> None:
    clock = FakeClock(NIGHT)
    ids = mails(setup, 3)
    one_by_one = QUIET.replace("except: urgent", "digest: false")
    text = rules(SUBJECT)
    async with pipeline(setup, clock, text, one_by_one) as pipe:
        await cycle(pipe)
    clock.at(datetime.fromisoformat("2026-12-05T07:00:01+01:00"))
    async with pipeline(setup, clock, text, one_by_one) as pipe:
        await cycle(pipe)
    assert [b["item_id"] for b in sent(setup)] == ids


async def test_a_limit_sends_five_then_one_digest_at_the_window_end(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ids = mails(setup, 40)
    text = rules(SUBJECT)
    async with pipeline(setup, clock, text, "limit: 5/10min") as pipe:
        await cycle(pipe)
        assert [b["item_id"] for b in sent(setup)] == ids[:5]
        metrics = pipe.metrics.exposition().decode()
        assert 'inboxbot_noise_control_total{sink="hooks",what="limited"} 35.0' in metrics
        notes = set(waiting(pipe.store.steps((PENDING,), "hooks"), clock.t).values())
        assert notes == {f"held: limit 5/10min reached, sends at {_hhmm(clock.t + 600)}"}
    clock.t += 300
    async with pipeline(setup, clock, text, "limit: 5/10min") as pipe:  # a restart
        await cycle(pipe)
        assert len(sent(setup)) == 5  # the count lives in the state
        clock.t += 301
        await cycle(pipe)
    assert len(sent(setup)) == 6
    digest = sent(setup)[5]
    assert sorted(i["item_id"] for i in digest["items"]) == sorted(ids[5:])
    assert digest["message"].splitlines()[-1] == "and 10 more"


async def test_a_rule_limit_counts_its_own_notifications(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    mails(setup, 4)
    (urgent,) = mails(setup, 1, "URGENT")
    text = rules(SUBJECT, extra="  limit: 2/1h\n")
    async with pipeline(setup, clock, text) as pipe:
        await cycle(pipe)
        assert len(sent(setup)) == 3 and sent(setup)[2]["item_id"] == urgent
        clock.t += 3601
        await cycle(pipe)
    assert len(sent(setup)[3]["items"]) == 2


async def test_a_mute_records_as_muted_and_cancels_the_actions(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ids = mails(setup, 2)
    text = rules(SUBJECT, then="  then: [mark_read]\n")
    async with pipeline(setup, clock, text) as pipe:
        held = Held(pipe.store)
        number = held.add_mute(
            Mute(0, clock.t + 3600, "on holiday", rule="newsletters"), now=clock.t
        )
        await cycle(pipe)
        assert sent(setup) == []
        muted = pipe.store.steps((MUTED,), "hooks")
        assert len(muted) == 2
        metrics = pipe.metrics.exposition().decode()
        assert 'inboxbot_noise_control_total{sink="hooks",what="muted"} 2.0' in metrics
        assert {waiting(muted, clock.t)[s.id] for s in muted} == {
            f'muted by {number} (until {_hhmm(clock.t + 3600)}): "on holiday"'
        }
        # the mute ends while the daemon runs: what comes next is sent
        clock.t += 3601
        (later,) = mails(setup, 1, "After the mute")
        await cycle(pipe)
    assert [b["item_id"] for b in sent(setup)] == [later]
    assert not any(setup.sim.message(i).is_read for i in ids)  # muted: not marked read
    assert setup.sim.message(later).is_read


async def test_mutes_by_sink_account_and_field(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    text = rules(SUBJECT)
    async with pipeline(setup, clock, text) as pipe:
        held = Held(pipe.store)
        held.add_mute(Mute(0, None, sink="hooks", match={"subject": "newsletter 0"}), now=clock.t)
        held.add_mute(Mute(0, None, account="elsewhere"), now=clock.t)
        ids = mails(setup, 2)
        await cycle(pipe)
        assert [b["item_id"] for b in sent(setup)] == [ids[1]]
        held.add_mute(Mute(0, None, account="inbox"), now=clock.t)
        mails(setup, 1, "Muted by account")
        await cycle(pipe)
        assert len(sent(setup)) == 1


async def test_a_deferring_mute_sends_one_digest_at_its_end(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    text = rules(SUBJECT)
    async with pipeline(setup, clock, text) as pipe:
        Held(pipe.store).add_mute(Mute(0, clock.t + 7200, "focus", defer=True), now=clock.t)
        ids = mails(setup, 4)
        await cycle(pipe)
    clock.t += 3600
    async with pipeline(setup, clock, text) as pipe:  # held across a restart
        await cycle(pipe)
        assert sent(setup) == []
        clock.t += 3601
        await cycle(pipe)
    (digest,) = sent(setup)
    assert sorted(i["item_id"] for i in digest["items"]) == sorted(ids)


async def test_unmute_sends_what_it_deferred_now(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    async with pipeline(setup, clock, rules(SUBJECT)) as pipe:
        held = Held(pipe.store)
        number = held.add_mute(Mute(0, clock.t + 7200, defer=True), now=clock.t)
        mails(setup, 2)
        await cycle(pipe)
        assert held.unmute(number, now=clock.t) == 2
        assert held.unmute(number, now=clock.t) is None
        await cycle(pipe)
    assert len(sent(setup)) == 1 and len(sent(setup)[0]["items"]) == 2


async def test_retry_sends_a_held_step_at_once(setup: Setup) -> None:
    clock = FakeClock(NIGHT)
    text = rules(SUBJECT)
    async with pipeline(setup, clock, text, QUIET) as pipe:
        (only,) = mails(setup, 1)
        await cycle(pipe)
        (step,) = pipe.store.steps((PENDING,), "hooks")
        assert pipe.store.retry_steps([step.id], now=clock.t) == 1
        await cycle(pipe)
    assert [b["item_id"] for b in sent(setup)] == [only]


def _hhmm(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M")


async def test_a_refused_digest_is_retried_whole_with_the_same_id(setup: Setup) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ids = mails(setup, 3)
    async with pipeline(setup, clock, rules(GROUP)) as pipe:
        await cycle(pipe)
        setup.hook.fail(503)
        clock.t += 31
        await cycle(pipe)
        assert sent(setup) == []
        steps = pipe.store.steps((PENDING,), "hooks")
        assert waiting(steps, clock.t) == {}  # waiting for a retry now, not held
        more = mails(setup, 1, "Joins the next one")
        clock.t += 60
        await cycle(pipe)
        (follow_up,) = pipe.store.steps((PENDING,), "hooks")  # one interval after the digest
    (digest,) = sent(setup)
    assert sorted(i["item_id"] for i in digest["items"]) == sorted(ids)
    assert setup.hook.keys[digest["id"]] == 1 and follow_up.item_id == more[0]
