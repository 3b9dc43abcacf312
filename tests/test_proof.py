"""Short forms of the proof suite's scenarios (``make proof`` runs them full size): each
runs inboxbot as a child process against the counting fakes and must pass on what the
fakes saw. The fuzz scenario's short form is tests/test_fuzz.py."""

from __future__ import annotations

from pathlib import Path

from proof import crash, guard, outage, secrets
from proof.common import Result


def _passed(result: Result) -> bool:
    print(result.scenario, result.counts, result.notes)  # shown when the test fails
    return result.passed


async def test_crash_short_form_loses_nothing_and_duplicates_only_inside_the_window(
    tmp_path: Path,
) -> None:
    result = await crash.run(tmp_path, kills=4, seed=14)
    assert _passed(result)
    assert result.counts["kills"] == 4 and result.counts["lost"] == 0


async def test_outage_short_form_delivers_everything_soon_after_recovery(
    tmp_path: Path,
) -> None:
    sink, upstream = await outage.run(tmp_path, minutes=0.1, seed=14)
    assert _passed(sink) and _passed(upstream)
    assert sink.counts["delivered %"] == upstream.counts["delivered %"] == 100.0


async def test_secrets_short_form_finds_no_canary(tmp_path: Path) -> None:
    result = await secrets.run(tmp_path, seed=14)
    assert _passed(result)
    assert result.counts["found"] == 0


async def test_guard_short_form_stops_a_rule_deleting_everything(tmp_path: Path) -> None:
    result = await guard.run(tmp_path, seed=14)
    assert _passed(result)
    assert result.counts["DELETE requests"] == 0
