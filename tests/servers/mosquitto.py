"""A real Mosquitto broker on loopback for the MQTT tests: an anonymous, a password and a
TLS listener (a self-signed certificate for 127.0.0.1 made with ``openssl``).

    with running_mosquitto() as broker:   # pytest.skip()s when Mosquitto is not installed
        broker.url("tls")                 # mqtts://127.0.0.1:PORT
        broker.stop(); broker.start()     # a restart, on the same ports

The broker runs in the foreground and is stopped by its PID. Run as root, Mosquitto drops
to the user ``mosquitto`` before it writes its log, so its folder belongs to that user (a
folder of its own under /tmp: pytest's own folders are closed to other users).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import free_port
from tests.servers.process import launch, wait_listening

INSTALL_HINT = "Mosquitto not installed: run tests/servers/install.sh (needs root)"
USERNAME = "inboxbot"
PASSWORD = "s3cret-broker-pass"

Listener = Literal["anonymous", "password", "tls"]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )


class Mosquitto:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports: dict[Listener, int] = {
            "anonymous": free_port(),
            "password": free_port(),
            "tls": free_port(),
        }
        self.ca_file = workdir / "cert.pem"  # self-signed: the certificate is its own CA
        self._proc: subprocess.Popen[bytes] | None = None
        self._configure()

    def url(self, listener: Listener = "anonymous") -> str:
        scheme = "mqtts" if listener == "tls" else "mqtt"
        return f"{scheme}://127.0.0.1:{self.ports[listener]}"

    def _configure(self) -> None:
        w = self.workdir
        run = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        run += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        run += ["-keyout", str(w / "key.pem"), "-out", str(self.ca_file)]
        subprocess.run(run, check=True, capture_output=True)
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run([passwd, "-b", "-c", str(w / "passwd"), USERNAME, PASSWORD], check=True)
        p = self.ports
        (w / "mosquitto.conf").write_text(
            f"""\
per_listener_settings true
persistence false
log_dest file {w}/mosquitto.log
log_type all
listener {p["anonymous"]} 127.0.0.1
allow_anonymous true
listener {p["password"]} 127.0.0.1
allow_anonymous false
password_file {w}/passwd
listener {p["tls"]} 127.0.0.1
allow_anonymous false
password_file {w}/passwd
certfile {self.ca_file}
keyfile {w}/key.pem
"""
        )
        for path in [w, *w.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
            if os.geteuid() == 0:
                shutil.chown(path, "mosquitto", "mosquitto")

    def start(self) -> None:
        assert self._proc is None, "already running"
        conf = str(self.workdir / "mosquitto.conf")
        self._proc = launch([self.binary, "-c", conf], self.workdir)
        wait_listening(self._proc, self.ports.values(), "mosquitto", self.log, 10.0)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_mosquitto() -> Iterator[Mosquitto]:
    """A started broker, stopped and its folder removed on exit; skips without Mosquitto."""
    binary = mosquitto_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip(INSTALL_HINT)
    workdir = Path(tempfile.mkdtemp(prefix="inboxbot-mosquitto-"))
    broker = Mosquitto(binary, workdir)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
