"""A real Matrix homeserver (Synapse) for tests, on loopback, started and stopped by PID.

    with running(tmp_path) as synapse:          # about 3 s to /health OK
        alice = synapse.user("alice")           # registered, logged in, not rate limited
        room = alice.create_room(alias="inbox")
        alice.messages(room)                    # the room's m.room.message contents

Synapse lives in its own virtual environment (``tests/servers/install.sh`` puts it in
``.cache/synapse``); ``missing()`` says why it cannot run here. The configuration is
Synapse's own generated one with the recipe's changes (see /work/shared/RECIPES.md):
one plain-HTTP client listener on 127.0.0.1, SQLite, open registration, no federation.
``rc_message`` stays LOW on purpose (a real 429 is testable): ``user(…)`` lifts the limit
per user through the admin API, ``user(…, limited=True)`` keeps it. The helper speaks
the client-server API with urllib, synchronously, so any test can use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from tests.conftest import free_port

VENV = Path(__file__).resolve().parents[2] / ".cache" / "synapse"
PYTHON = VENV / "bin" / "python"
REGISTER = VENV / "bin" / "register_new_matrix_user"
SERVER_NAME = "localhost"
PASSWORD = "correct horse battery staple"
MESSAGE_RATE = {"per_second": 0.1, "burst_count": 5}  # a limited user hits 429 quickly
GENEROUS = {"per_second": 1000, "burst_count": 1000}
START_TIMEOUT = 60.0


def missing() -> str | None:
    """Why Synapse cannot run here, or None."""
    if not REGISTER.exists():
        return "Synapse not installed: run tests/servers/install.sh"
    return None


def request(
    url: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """(status, decoded JSON body) of one client-server API call; errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"null")


@dataclass
class MatrixUser:
    url: str
    user_id: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a call that must succeed."""
        status, answer = request(self.url, method, f"/_matrix/client/v3{path}", self.token, body)
        if not 200 <= status < 300:
            raise AssertionError(f"{method} {path} → {status}: {answer}")
        return answer

    def create_room(self, alias: str | None = None, invite: tuple[str, ...] = ()) -> str:
        body: dict[str, Any] = {"preset": "private_chat", "invite": list(invite)}
        if alias:
            body["room_alias_name"] = alias
        room_id: str = self.call("POST", "/createRoom", body)["room_id"]
        return room_id

    def join(self, room: str) -> None:
        self.call("POST", f"/join/{quote(room, safe='')}", {})

    def send(self, room: str, content: dict[str, Any], txn: str) -> str:
        path = f"/rooms/{quote(room, safe='')}/send/m.room.message/{txn}"
        event_id: str = self.call("PUT", path, content)["event_id"]
        return event_id

    def events(self, room: str) -> list[dict[str, Any]]:
        """The room's m.room.message events, oldest first."""
        query = "dir=b&limit=1000&filter=" + quote(json.dumps({"types": ["m.room.message"]}))
        chunk = self.call("GET", f"/rooms/{quote(room, safe='')}/messages?{query}")["chunk"]
        return list(reversed(chunk))

    def messages(self, room: str) -> list[dict[str, Any]]:
        return [e["content"] for e in self.events(room)]

    def notifications(self) -> dict[str, list[Any]]:
        """Event id → push actions, for the events that notified this user."""
        found = self.call("GET", "/notifications?limit=1000")["notifications"]
        return {n["event"]["event_id"]: n["actions"] for n in found}


@dataclass
class Synapse:
    """One configured homeserver; ``launch`` and ``stop`` may alternate (an outage, a
    restart): the port, the database and the users stay."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    startup: float = 0.0  # seconds from the last launch to /health OK
    admin: MatrixUser | None = None
    users: dict[str, MatrixUser] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.workdir / "homeserver.yaml"

    def user(self, name: str, *, limited: bool = False) -> MatrixUser:
        """A registered, logged-in user; without ``limited`` it is exempt from rate limits."""
        if name not in self.users:
            self.users[name] = self._register(name, admin=False)
            if not limited:
                self._unlimit(self.users[name])
        return self.users[name]

    def log_tail(self, lines: int = 30) -> str:
        text = (self.workdir / "synapse.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def launch(self) -> None:
        """Start the process (its output appended to synapse.log); wait for /health."""
        with open(self.workdir / "synapse.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(PYTHON), "-m", "synapse.app.homeserver", "--config-path", str(self.config)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        began = time.monotonic()
        try:
            self._wait_healthy(self.process)
        except BaseException:
            self.stop()
            raise
        self.startup = time.monotonic() - began

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited within ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # in case a test left it paused
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {process.returncode}:\n"
                                   f"{self.log_tail()}")  # fmt: skip
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.read() == b"OK":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Synapse not healthy after {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _register(self, name: str, *, admin: bool) -> MatrixUser:
        """The admin with Synapse's own ``register_new_matrix_user``; the others through
        open registration (a subprocess costs about a second each)."""
        if admin:
            command = [str(REGISTER), "-c", str(self.config), "-u", name, "-p", PASSWORD]
            subprocess.run([*command, "--admin", self.url], check=True, capture_output=True,
                           timeout=60)  # fmt: skip
            path, body = "/login", {"type": "m.login.password", "password": PASSWORD,
                                    "identifier": {"type": "m.id.user", "user": name}}  # fmt: skip
        else:
            path = "/register"
            body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        status, answer = request(self.url, "POST", f"/_matrix/client/v3{path}", body=body)
        if status != 200:
            raise RuntimeError(f"{path} of {name} failed: {status} {answer}")
        return MatrixUser(self.url, answer["user_id"], answer["access_token"])

    def _unlimit(self, user: MatrixUser) -> None:
        if self.admin is None:
            self.admin = self._register("admin", admin=True)
            self._unlimit(self.admin)
        path = f"/_synapse/admin/v1/users/{quote(user.user_id)}/override_ratelimit"
        body = {"messages_per_second": 0, "burst_count": 0}  # 0: not limited at all
        status, answer = request(self.url, "POST", path, self.admin.token, body)
        if status != 200:
            raise RuntimeError(f"rate limit override failed: {status} {answer}")


def configure(workdir: Path, port: int) -> Path:
    """Synapse's generated configuration, changed for a private test server."""
    config = workdir / "homeserver.yaml"
    subprocess.run(
        [str(PYTHON), "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME,
         "--config-path", str(config), "--data-directory", str(workdir),
         "--generate-config", "--report-stats=no"],
        cwd=workdir, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    settings = yaml.safe_load(config.read_text())
    settings.pop("log_config", None)  # log to stderr, which goes to synapse.log
    settings.update(
        listeners=[{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                    "tls": False, "resources": [{"names": ["client"], "compress": False}]}],
        enable_registration=True,
        enable_registration_without_verification=True,
        trusted_key_servers=[],
        presence={"enabled": False},
        bcrypt_rounds=4,  # password hashing at test speed
        rc_message=MESSAGE_RATE,
        rc_login={k: GENEROUS for k in ("address", "account", "failed_attempts")},
        rc_registration=GENEROUS,
        rc_joins={"local": GENEROUS, "remote": GENEROUS},
        rc_invites={k: GENEROUS for k in ("per_room", "per_user", "per_issuer")},
        rc_admin_redaction=GENEROUS,
    )  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    return config


@contextmanager
def running(workdir: Path) -> Iterator[Synapse]:
    """A configured Synapse in ``workdir``, launched, and stopped by PID on exit."""
    port = free_port()
    configure(workdir, port)
    server = Synapse(workdir, port)
    server.launch()
    try:
        yield server
    finally:
        server.stop()
