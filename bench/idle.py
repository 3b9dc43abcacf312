"""Memory of an idle ``inboxbot run``: 6 Mail.td feeds with nothing new, polled every 10 s,
the HTTP server on; time from start to READY=1 (sd_notify); RSS sampled every 10 s, then
SIGTERM: exit code and time to stop. Beside it, a bare aiohttp loop polling the same inboxes
on the same schedule, and the import floors (``import bot.app`` against ``import aiohttp``).
``--sentry`` sets a DSN (a local port nobody answers).

    .venv/bin/python bench/idle.py [--seconds 60] [--every 10s] [--sentry]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    PY,
    Sim,
    bare_loop,
    free_port,
    mailtd_sim,
    row,
    status_kb,
    stop,
    wait_ready,
    write_config,
)

from bot.config import parse_duration

INBOXBOT = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "inboxbot"
FEEDS = 6
SAMPLE_EVERY = 10.0
RULES = """\
- name: every-mail
  when: {kind: email}
  notify: [{sink: screen, template: email}]
  then: [mark_read]
"""


def import_floor(module: str) -> float:
    """RSS in MiB of a fresh interpreter that imported ``module``."""
    code = f"import {module}, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    status = subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def sample(pid: int, start: float, seconds: float, who: str) -> list[int]:
    """VmRSS (kB) every SAMPLE_EVERY seconds until ``seconds`` after ``start``."""
    samples: list[int] = []
    while True:
        time.sleep(min(SAMPLE_EVERY, max(0.0, start + seconds - time.monotonic())))
        elapsed = time.monotonic() - start
        samples.append(status_kb(pid, "VmRSS"))
        print(f"idle: {who} t={elapsed:5.0f} s RSS {samples[-1] / 1024:.1f} MiB", flush=True)
        if elapsed >= seconds - 0.5:
            return samples


def inboxbot(sim: Sim, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    config = write_config(
        folder, sim, rules=RULES, sinks="  screen: {type: console}\n", every=args.every,
        rate=4, extra="backlog: skip\n",
    )  # fmt: skip
    log = (folder / "inboxbot.log").open("w")
    cmd = [str(INBOXBOT), "--config", str(config), "--state", str(folder / "state.db"), "run"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(folder / "notify.sock"))
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(folder / "notify.sock"),
        "INBOXBOT_LISTEN": f"127.0.0.1:{free_port()}",
    }
    if args.sentry:
        env["INBOXBOT_SENTRY_DSN"] = "http://public@127.0.0.1:9/1"
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    ready = wait_ready(notify) - start
    samples = sample(proc.pid, start, args.seconds, "inboxbot")
    if proc.poll() is not None:
        raise SystemExit(f"inboxbot exited early with {proc.returncode}")
    hwm = status_kb(proc.pid, "VmHWM")
    stopping = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    stopped = time.monotonic() - stopping
    log.close()
    lines = (folder / "inboxbot.log").read_text().splitlines()
    trouble = [line for line in lines if "level=warning" in line or "level=error" in line]
    print(f"idle: inboxbot READY=1 after {ready:.2f} s; SIGTERM -> exit code {code} after "
          f"{stopped:.2f} s; {len(lines)} log lines, {len(trouble)} warnings/errors")  # fmt: skip
    for line in trouble[:5]:
        print(f"idle:   {line}")
    return {"rss": samples[-1] / 1024, "peak": max(samples) / 1024, "hwm": hwm / 1024}


def bare(sim: Sim, every: float, seconds: float) -> dict[str, float]:
    start = time.monotonic()
    proc = bare_loop(sim, every)
    samples = sample(proc.pid, start, seconds, "bare")
    hwm = status_kb(proc.pid, "VmHWM")
    stop(proc)
    return {"rss": samples[-1] / 1024, "peak": max(samples) / 1024, "hwm": hwm / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="inboxbot's run")
    parser.add_argument("--every", default="10s", help="each feed's poll interval")
    parser.add_argument("--sentry", action="store_true", help="with a Sentry DSN set")
    args = parser.parse_args()
    every = parse_duration(args.every).total_seconds()
    with mailtd_sim(accounts=FEEDS, messages=10) as sim, tempfile.TemporaryDirectory() as tmp:
        ours = inboxbot(sim, Path(tmp), args)
        base = bare(sim, every, min(args.seconds, 3 * every))
    print(
        f"idle: {FEEDS} feeds every {args.every}, HTTP server on, Sentry "
        f"{'on' if args.sentry else 'off'}, inboxbot sampled for {args.seconds:.0f} s"
    )
    row("idle", f"RSS MiB, {FEEDS} inboxes, last sample", base["rss"], ours["rss"], "{:.1f}")
    row("idle", "highest sample MiB", base["peak"], ours["peak"], "{:.1f}")
    row("idle", "VmHWM MiB", base["hwm"], ours["hwm"], "{:.1f}")
    row("idle", "import floor MiB (aiohttp / bot.app)", import_floor("aiohttp"),
        import_floor("bot.app"), "{:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
