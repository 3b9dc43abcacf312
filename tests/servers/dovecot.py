"""A real Dovecot on loopback for the IMAP tests: a plain listener (for ``tls: none`` on
127.0.0.1) and an implicit-TLS one (a self-signed certificate for 127.0.0.1 made with
``openssl``), maildir in a throw-away folder, one user from a passwd-file.

    with running_dovecot() as server:     # pytest.skip()s when Dovecot is not installed
        server.ports["plain"], server.ports["tls"]
        user = server.new_user()          # a mailbox of its own for each test
        server.stop(); server.start()     # a restart, on the same ports

Dovecot runs in the foreground (``dovecot -F -c CONF``) and is stopped by its PID. Run as
root it drops its login and internal processes to the Debian package's users and the
mail to ``dovecot`` (uid 0 may not own mail), so its folder belongs to that user (a folder
of its own under /tmp: pytest's own folders are closed to other users). Not root, it runs
everything as the user running the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import free_port
from tests.servers.process import launch, wait_listening

INSTALL_HINT = "Dovecot not installed: run tests/servers/install.sh (needs root)"
USERNAME = "alice@example.org"
PASSWORD = "s3cret-imap-pass"
USERS = 50  # one mailbox per test

Listener = Literal["plain", "tls"]


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


class Dovecot:
    def __init__(self, binary: str, workdir: Path, extra: str = "") -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports: dict[Listener, int] = {"plain": free_port(), "tls": free_port()}
        self.ca_file = workdir / "cert.pem"  # self-signed: the certificate is its own CA
        self._proc: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._configure(extra)

    def new_user(self) -> str:
        """A user no test had yet (same password): made beforehand, as Dovecot may not see
        a passwd-file changed twice in one second."""
        self._count += 1
        assert self._count <= USERS, "more users than made: raise USERS"
        return f"user{self._count}@example.org"

    def _users(self) -> tuple[str, str, pwd.struct_passwd]:
        """(login user, internal user, the user owning the mail)."""
        if os.geteuid() == 0:
            return "dovenull", "dovecot", pwd.getpwnam("dovecot")
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, me

    def _configure(self, extra: str) -> None:
        w = self.workdir
        run = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        run += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        run += ["-keyout", str(w / "key.pem"), "-out", str(self.ca_file)]
        subprocess.run(run, check=True, capture_output=True)
        login, internal, owner = self._users()
        names = [USERNAME] + [f"user{n}@example.org" for n in range(1, USERS + 1)]
        (w / "users").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}::::::\n" for u in names))
        (w / "mail").mkdir()
        (w / "dovecot.conf").write_text(
            f"""\
protocols = imap
{extra}
listen = 127.0.0.1
base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
default_login_user = {login}
default_internal_user = {internal}
first_valid_uid = {owner.pw_uid}
first_valid_gid = {owner.pw_gid}
ssl = yes
ssl_cert = <{w}/cert.pem
ssl_key = <{w}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{w}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {w}/users
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={w}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.ports["plain"]}
  }}
  inet_listener imaps {{
    port = {self.ports["tls"]}
    ssl = yes
  }}
}}
"""
        )
        for path in [w, *w.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
            if os.geteuid() == 0:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        assert self._proc is None, "already running"
        conf = str(self.workdir / "dovecot.conf")
        self._proc = launch([self.binary, "-F", "-c", conf], self.workdir)
        wait_listening(self._proc, self.ports.values(), "dovecot", self.log, 15.0)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # the master lingers ~6 s after its helpers are gone, and an imap process in IDLE
        # stays ~10 s: after a moment all of it is killed, as systemd does
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the master and its children
        proc.wait()

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "dovecot.log"):
            path = self.workdir / name
            text += path.read_text(errors="replace") if path.exists() else ""
        return text


@contextmanager
def running_dovecot(extra: str = "") -> Iterator[Dovecot]:
    """A started server, stopped and its folder removed on exit; skips without Dovecot.
    ``extra``: more settings (``imap_capability = IMAP4rev1 UIDPLUS``: a server without IDLE)."""
    binary = dovecot_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip(INSTALL_HINT)
    workdir = Path(tempfile.mkdtemp(prefix="inboxbot-dovecot-"))
    server = Dovecot(binary, workdir, extra)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
