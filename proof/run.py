"""``python -m proof.run [SCENARIO…] [--kills N] [--minutes M] [--seed S]``: run the proof
scenarios (all by default), print each one's seed and figures, and write
proof/RESULTS.md (a scenario not run keeps its last row)."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from proof import crash, faults, fuzz, guard, outage, secrets, sinkfaults, soak
from proof.common import Result

HERE = Path(__file__).parent
ROWS = HERE / "results.json"
FULL = {"crash": "--kills 200", "outage": "--minutes 5", "fuzz": "--cases 100000",
        "soak": "--soak-minutes 5"}  # fmt: skip
NOTES = [
    "Full size (`make proof`, the defaults): "
    + ", ".join(f"{k} `{v}`" for k, v in FULL.items())
    + '; a row run smaller says "reduced" and its size.',
    "",
    "Found by these scenarios and fixed in the product:",
    "",
    "- outage (upstream): a failing feed's rest grew to ~17 min (cap 30 min), so mail that "
    "arrived in a 10-minute outage waited minutes after the upstream's return; now capped "
    "at 15 s (bot/polling.py). Then the first delivery came 46.3 s after the return of a "
    "1,213-mail backlog: every detail was fetched before any plan was saved; plans are now "
    "saved 20 items at a time (bot/planning.py).",
    "- sink faults: a 2xx that is not the service's answer (a proxy's HTML page, an empty "
    "body) counted as delivered on ntfy, Gotify, Discord, Slack, Rocket.Chat and Matrix "
    "(12 of 85 cells lost the notification); now retried.",
    "- upstream faults: Mail.td ignored a 429's Retry-After (requests 2 s later), and a "
    "detail refused that way did not hold the list polls; Rocket.Chat rested 60 s on a "
    "Retry-After without X-RateLimit-Reset; MinuteMail read it as an exhausted quota "
    "(1 h); a Rocket.Chat subscription with a garbled rid moved the cursor past the DM.",
    "- soak: pruning ran every 6 h whatever `retention` was, and first 6 h after a start; "
    "now every quarter of the retention (at most 6 h), first a minute after the start.",
    "- fuzz: a list inside a rule's `upstream`/`kind`/`feed` list raised TypeError; now a "
    "located error. Earlier: bad ids building items, a Rocket.Chat epoch overflow, a YAML "
    "control character, Sentry breadcrumbs with query strings.",
    "",
    "Open limits:",
    "",
    "- IMAP is not in the fault matrix (tests/test_imap_source.py covers its faults against "
    "a real Dovecot: restarts, refused logins, certificates, UIDVALIDITY).",
    "- outage measures Mail.td as the upstream and the webhook as the sink; the fault "
    "matrix covers every HTTP upstream and sink with shorter faults.",
    "- A timeout or a cut answer after the service took the notification sends it twice "
    "(the at-least-once window; Matrix's transaction id and the webhook's Idempotency-Key "
    "let the receiver drop the copy).",
    "- The soak's database grows ~0.9 KB per remembered id (ids are kept a year to never "
    "notify twice), bounded by that year, not by `retention`.",
    "",
    "This table: a full `make proof` in sequence took 2,064 s (34.4 min) on 2 cores at "
    "88498d1; outage and fuzz were rerun at 2e5c42d after the fixes they led to (beside a "
    "`make test` run). A row's `+changes` there was mostly this table itself being written "
    "(no longer counted); soak and guard ran while b7e7dc6's rules fix was being written.",
]
Scenario = Callable[[Path, argparse.Namespace, int], Awaitable[list[Result]]]


async def _crash(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return [await crash.run(tmp, kills=args.kills, seed=seed)]


async def _outage(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return await outage.run(tmp, minutes=args.minutes, seed=seed)


async def _fuzz(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return [await asyncio.to_thread(fuzz.run, args.cases, seed)]


async def _secrets(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return [await secrets.run(tmp, seed=seed)]


async def _guard(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return [await guard.run(tmp, seed=seed)]


async def _soak(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return await soak.run(tmp, minutes=args.soak_minutes, seed=seed)


async def _faults(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return await faults.run(tmp, seed=seed)


async def _sinkfaults(tmp: Path, args: argparse.Namespace, seed: int) -> list[Result]:
    return await sinkfaults.run(tmp, seed=seed)


SCENARIOS: dict[str, Scenario] = {
    "crash": _crash, "outage": _outage, "faults": _faults, "sinkfaults": _sinkfaults,
    "fuzz": _fuzz, "secrets": _secrets, "soak": _soak, "guard": _guard,
}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proof.run", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"one or more of {', '.join(SCENARIOS)} (default: all)")  # fmt: skip
    parser.add_argument("--kills", type=int, default=200, help="crash: SIGKILLs (200)")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="outage: minutes of each failing phase (5)")  # fmt: skip
    parser.add_argument("--cases", type=int, default=100_000,
                        help="fuzz: generated cases in total (100000)")  # fmt: skip
    parser.add_argument("--soak-minutes", type=float, default=5.0,
                        help="soak: minutes of the accelerated run (5)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; one of {', '.join(SCENARIOS)}")
    return args


def _shell(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def _cell(counts: dict[str, object]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _rows() -> dict[str, dict[str, object]]:
    """The rows written so far, by scenario."""
    return dict(json.loads(ROWS.read_text())) if ROWS.exists() else {}


def _commit() -> str:
    """HEAD's short hash, and whether the checkout had changes."""
    commit = _shell("git", "-C", str(HERE), "rev-parse", "--short", "HEAD")
    dirty = _shell(
        "git",
        "-C",
        str(HERE),
        "status",
        "--porcelain",
        "--",
        "..",
        ":!RESULTS.md",
        ":!results.json",
    )  # the run's own output is no change
    return f"{commit}{'+changes' if dirty else ''}"


def write_results(rows: dict[str, dict[str, object]]) -> Path:
    lines = [
        "# Proof results",
        "",
        "Written by `make proof` (`python -m proof.run`); each row says how it was sized and "
        "its seed, so that `python -m proof.run SCENARIO --seed S …` replays it. The fakes "
        "count what they saw (the receiver's POSTs, the simulator's requests), not what "
        "inboxbot logged.",
        "",
        "| scenario | what was tried | counts | verdict |",
        "|---|---|---|---|",
    ]
    for row in rows.values():
        verdict = "pass" if row["passed"] else "**FAIL**"
        notes = "".join(f"<br>{n}" for n in row["notes"])  # type: ignore[attr-defined]
        lines.append(f"| {row['scenario']} | {row['tried']} (seed {row['seed']}, "
                     f"{row['when']}) | {_cell(row['counts'])}{notes} | {verdict} |")  # type: ignore[arg-type]  # fmt: skip
    lines += ["", *NOTES]
    lines += [
        "",
        f"Machine: `{_shell('uname', '-a')}`, {_shell('nproc')} cores, "
        f"Python {platform.python_version()}.",
        f"Table written at commit `{_commit()}`; each row names the commit it ran at.",
        "",
    ]
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(lines))
    return out


def _reduced(name: str, args: argparse.Namespace) -> str:
    """The size a scenario ran at when it was smaller than the full one, else ''."""
    size = {"crash": ("--kills", args.kills, 200), "outage": ("--minutes", args.minutes, 5),
            "fuzz": ("--cases", args.cases, 100_000),
            "soak": ("--soak-minutes", args.soak_minutes, 5)}.get(name)  # fmt: skip
    return f"{size[0]} {size[1]:g}" if size and size[1] < size[2] else ""


async def main(args: argparse.Namespace) -> int:
    rows: dict[str, dict[str, object]] = {}
    failed = 0
    for name in args.scenarios or list(SCENARIOS):
        seed = args.seed if args.seed is not None else random.randrange(1 << 31)
        print(f"== {name}: seed {seed}", flush=True)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f"proof-{name}-"))
        results = await SCENARIOS[name](tmp, args, seed)
        if args.keep:
            print(f"   kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        for result in results:
            failed += not result.passed
            verdict = "pass" if result.passed else "FAIL"
            print(f"   {result.scenario}: {verdict}; {_cell(result.counts)}", flush=True)
            for note in result.notes:
                print(f"   {note}", flush=True)
            when = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            when += f"{time.monotonic() - started:.0f} s, at {_commit()}"
            if _reduced(name, args):
                when = f"reduced: {_reduced(name, args)}, " + when
            rows[result.scenario] = {**asdict(result), "seed": seed, "when": when}
        rows = {**_rows(), **rows}  # another run side by side may have written rows meanwhile
        ROWS.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
        write_results(rows)
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
