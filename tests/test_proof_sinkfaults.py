"""A short form of the proof suite's sink fault matrix (``make proof`` runs every cell for
every HTTP sink kind): two sinks, each through a reset mid-body, a 429 whose Retry-After
is an HTTP-date and an HTML page answered with 200, the daemon as a child process."""

from __future__ import annotations

from pathlib import Path

from proof.sinkfaults import QUICK_KINDS, run


async def test_the_quick_sink_fault_matrix_passes(tmp_path: Path) -> None:
    results = await run(tmp_path, seed=14, quick=True)
    assert len(results) == len(QUICK_KINDS)
    for result in results:
        assert result.counts["cells"] == 3
        assert result.passed, (result.scenario, result.counts, result.notes)
