"""Many feeds in one ``inboxbot run``: 100, 1,000 and 10,000 Mail.td feeds at ``every: 60s``
against one simulator, nothing new arriving. Per size: ``check``'s time, READY after a cold
start and after a restart on the state, then over one interval CPU (% of one core), RSS, and
how evenly the polls spread (the busiest second against the mean); a bare aiohttp loop
polling the same inboxes on the same schedule, in a process of its own, beside it.

    .venv/bin/python bench/scale.py [--feeds 100,1000,10000] [--every 60] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import Sim, bare_loop, mailtd_sim, row, status_kb, stop, wait_ready, write_config

INBOXBOT = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "inboxbot"
RULES = """\
- name: every-mail
  when: {kind: email}
  notify: [{sink: screen, template: email}]
"""


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_check(config: Path, state: Path) -> tuple[float, float]:
    """``inboxbot check``'s (wall, CPU) seconds, CPU of the child only (the machine is shared)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(INBOXBOT), "--config", str(config), "--state", str(state), "check"],
                   check=True, capture_output=True)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def start_daemon(folder: Path, config: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The daemon, and the seconds from its start to READY=1."""
    sock_path = folder / "notify.sock"
    sock_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    log = (folder / "inboxbot.log").open("a")
    cmd = [str(INBOXBOT), "--config", str(config), "--state", str(folder / "state.db"), "run"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    ready = wait_ready(notify) - start
    notify.close()
    return proc, ready


def measure(pid: int, sim: Sim, seconds: float) -> dict[str, float]:
    """CPU % of one core, RSS and the simulator's counts over ``seconds``."""
    sim.reset()
    cpu, start = cpu_of(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu_of(pid) - cpu, time.monotonic() - start
    return {"cpu_pct": 100 * used / wall, "rss_mib": status_kb(pid, "VmRSS") / 1024,
            "hwm_mib": status_kb(pid, "VmHWM") / 1024, **sim.counts()}  # fmt: skip


def inboxbot(sim: Sim, folder: Path, every: float, seconds: float) -> dict[str, float]:
    config = write_config(folder, sim, rules=RULES, sinks="  screen: {type: console}\n",
                          every=f"{every:g}s", rate=4, extra="backlog: skip\n")  # fmt: skip
    check = timed_check(config, folder / "state.db")
    figures = dict(zip(("check_s", "check_cpu_s"), check, strict=True))
    proc, figures["ready_cold_s"] = start_daemon(folder, config)
    time.sleep(every)  # the first polls spread over (at most) one interval
    figures |= measure(proc.pid, sim, seconds)
    stop(proc)
    figures["state_mib"] = (folder / "state.db").stat().st_size / 2**20
    proc, figures["ready_restart_s"] = start_daemon(folder, config)
    stop(proc)
    return figures


def bare(sim: Sim, every: float, seconds: float) -> dict[str, float]:
    """The bare loop (``common.py bare``) in a process of its own, measured the same way."""
    proc = bare_loop(sim, every)
    time.sleep(every)
    figures = measure(proc.pid, sim, seconds)
    stop(proc)
    return figures


def report(n: int, every: float, seconds: float, base: dict[str, float],
           ours: dict[str, float]) -> None:  # fmt: skip
    name = f"scale {n}"
    print(f"{name}: {n} feeds every {every:g}s, {seconds:g} s measured after {every:g} s; "
          f"inboxbot check {ours['check_s']:.2f} s wall ({ours['check_cpu_s']:.2f} s CPU), READY "
          f"{ours['ready_cold_s']:.2f} s cold, {ours['ready_restart_s']:.2f} s on its state of "
          f"{ours['state_mib']:.1f} MiB; refused requests bare {base['refused']:.0f}, "
          f"inboxbot {ours['refused']:.0f}", flush=True)  # fmt: skip
    row(name, "CPU % of one core", base["cpu_pct"], ours["cpu_pct"], "{:.1f}")
    row(name, "RSS MiB", base["rss_mib"], ours["rss_mib"], "{:.1f}")
    row(name, "peak RSS (VmHWM) MiB", base["hwm_mib"], ours["hwm_mib"], "{:.1f}")
    row(name, "list GETs", base["list"], ours["list"], "{:.0f}")
    row(name, "detail GETs", base["detail"], ours["detail"], "{:.0f}")
    row(name, f"busiest second's list GETs (even: {n / every:.1f})", base["busiest_second"],
        ours["busiest_second"], "{:.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", default="100,1000,10000")
    parser.add_argument("--every", type=float, default=60.0, help="each feed's interval, s")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="measured after one interval of warm-up (default: one interval)",
    )
    args = parser.parse_args()
    seconds = args.seconds or args.every
    for n in (int(f) for f in args.feeds.split(",")):
        with mailtd_sim(accounts=n, messages=1) as sim, tempfile.TemporaryDirectory() as tmp:
            ours = inboxbot(sim, Path(tmp), args.every, seconds)
            base = bare(sim, args.every, seconds)
        report(n, args.every, seconds, base, ours)


if __name__ == "__main__":
    main()
