"""A throw-away PostgreSQL server for the tests: Debian's binaries, a temp dir, 127.0.0.1, stopped by PID.

``initdb`` and ``postgres`` refuse to run as root, so as root the server runs
as the ``postgres`` user (or ``nobody``) through ``runuser``. Without the
binaries the tests that need it skip and say how to get them
(``apt-get install postgresql``; ``.ci/run`` and ``make test`` do it when root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable_reason() -> str | None:
    if _bindir() is None:
        return "PostgreSQL binaries not found (apt-get install postgresql; .ci/run installs them as root)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: cannot start PostgreSQL as a non-root user"
    return None


@dataclass
class PgServer:
    bindir: Path
    datadir: Path
    port: int
    user: str | None  # the OS user the server runs as (None: this user)
    pid: int | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://app@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)  # noqa: S603

    def start(self) -> PgServer:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.datadir), "-U", "app", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--locale=C")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.datadir / "server.log"),
                  "-w", "-t", "60", "start")
        self.pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        return self

    def stop(self) -> None:
        """Immediate shutdown of the postmaster by its PID (SIGQUIT: a throw-away server needs no
        checkpoint), then wait for it to go and remove its directory."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGQUIT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.pid = None
        shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty schema in the ``app`` database (cheap: no template copy per test); its URL.

        The schema is the connection's ``search_path``, so tables, migrations and
        ``alembic_version`` land in it as in a database of their own."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=app dbname=postgres",
                             autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'app'").fetchone():
                conn.execute('CREATE DATABASE "app"')
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=app dbname=app", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"postgresql+psycopg://app@127.0.0.1:{self.port}/app?options=-csearch_path%3D{name}"


def start_server() -> PgServer:
    """Start a server in a new private temp dir (pytest's are root-only: the server user must enter it)."""
    bindir = _bindir()
    assert bindir is not None
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
    root = Path(tempfile.mkdtemp(prefix="sda-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return PgServer(bindir=bindir, datadir=root / "pgdata", port=_free_port(), user=user).start()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
