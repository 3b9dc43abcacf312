"""A short form of the proof suite's fault matrix (``make proof`` runs every cell for the
five upstreams): a few cells for Mail.td and Rocket.Chat, each against `inboxbot run`."""

from __future__ import annotations

import random
from pathlib import Path

from proof.faults import run


async def test_a_few_fault_cells_pass_for_two_upstreams(tmp_path: Path) -> None:
    results = await run(tmp_path, seed=random.randrange(2**32), quick=True)
    for result in results:
        assert result.passed, (result.scenario, result.counts, result.notes)
