"""Memory of an idle ``inboxbot run``: 6 Mail.td feeds with nothing new, polled every 10 s,
the HTTP server on; time from start to READY=1 (sd_notify); RSS sampled every 10 s, then
SIGTERM: exit code and time to stop. ``--sentry`` sets a DSN (a local port nobody answers).

    .venv/bin/python bench/idle.py [--seconds 180] [--every 10s] [--sentry]
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

from common import free_port, mailtd_sim, status_kb, wait_ready, write_config

INBOXBOT = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "inboxbot"
FEEDS = 6
SAMPLE_EVERY = 10.0
RULES = """\
- name: every-mail
  when: {kind: email}
  notify: [{sink: screen, template: email}]
  then: [mark_read]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--every", default="10s", help="each feed's poll interval")
    parser.add_argument("--sentry", action="store_true", help="with a Sentry DSN set")
    args = parser.parse_args()
    with mailtd_sim(accounts=FEEDS, messages=10) as sim, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
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
        print(f"idle: READY=1 after {ready:.2f} s", flush=True)
        samples: list[tuple[float, int]] = []
        while True:
            time.sleep(min(SAMPLE_EVERY, max(0.0, start + args.seconds - time.monotonic())))
            if proc.poll() is not None:
                raise SystemExit(f"inboxbot exited early with {proc.returncode}")
            elapsed = time.monotonic() - start
            samples.append((elapsed, status_kb(proc.pid, "VmRSS")))
            print(f"idle: t={elapsed:5.0f} s RSS {samples[-1][1] / 1024:.1f} MiB", flush=True)
            if elapsed >= args.seconds - 0.5:
                break
        hwm = status_kb(proc.pid, "VmHWM")
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stopped = time.monotonic() - stop
        log.close()
        lines = (folder / "inboxbot.log").read_text().splitlines()
    final, peak = samples[-1][1] / 1024, max(kb for _, kb in samples) / 1024
    print(
        f"idle: {FEEDS} feeds every {args.every}, HTTP server on, Sentry "
        f"{'on' if args.sentry else 'off'}, {args.seconds:.0f} s: RSS final {final:.1f} "
        f"MiB, peak sampled {peak:.1f} MiB, VmHWM {hwm / 1024:.1f} MiB"
    )
    print(f"idle: SIGTERM -> exit code {code} after {stopped:.2f} s")
    trouble = [line for line in lines if "level=warning" in line or "level=error" in line]
    print(f"idle: {len(lines)} log lines, {len(trouble)} warnings/errors")
    for line in trouble[:5]:
        print(f"idle:   {line}")


if __name__ == "__main__":
    main()
