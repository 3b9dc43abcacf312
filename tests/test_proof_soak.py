"""A short form of the proof suite's soak (``make proof`` runs 5 minutes): 30 s of 34 feeds
at `every: 1s` with mail, reloads, a flapping webhook and a short retention. Every check of
the full run is asserted; over 30 s the growth checks (RSS, fds, tasks, threads, database,
poll duration) compare two 6 s windows, so they catch a gross leak, not a slow one."""

from __future__ import annotations

from pathlib import Path

from proof.soak import run


async def test_a_short_soak_grows_nothing_and_delivers_every_mail_once(tmp_path: Path) -> None:
    [result] = await run(tmp_path, minutes=0.5, seed=2026)
    assert result.passed, (result.counts, result.notes)
    assert result.counts["reloads"] == "3/3" and result.counts["flaps"] == 3
    assert result.counts["mails"] > 40 and result.counts["polls"] > 500
