"""Real PostgreSQL 15 and Redis servers on 127.0.0.1 for the history tests and the benchmarks.

PostgreSQL refuses to run as root: as root, the cluster is initialised and run as the ``postgres`` system user
(created if missing) through ``runuser``. Both servers get a password, so tests can check it never leaks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from coordinator.testing.process import free_port
from coordinator.testing.waiting import wait_for

# Debian/Ubuntu keep each major version's binaries off PATH; 15 first (what CI has), then any other installed.
PG_BIN_CANDIDATES = (
    "/usr/lib/postgresql/15/bin",
    *sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
)
# Throw-away servers on loopback; the masking tests look for these in logs.
PG_PASSWORD = "pg-secret-5f3a"  # noqa: S105
REDIS_PASSWORD = "redis-secret-9c1d"  # noqa: S105


def _pg_bindir() -> Path:
    explicit = os.environ.get("COORDINATOR_PG_BIN")
    for candidate in ([explicit] if explicit else []) + list(PG_BIN_CANDIDATES):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL 15 binaries not found (set COORDINATOR_PG_BIN, or apt-get install postgresql-15)")


def _service_user() -> str | None:
    """The user PostgreSQL runs as: ourselves, or ``postgres`` (created if needed) when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"], check=True
        )
    return "postgres"


class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb into a temp dir, pg_ctl start/stop on a free port)."""

    def __init__(self, durable: bool = False) -> None:
        self.bindir = _pg_bindir()
        self.user = _service_user()
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="coordinator-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        # Tests do not need crash safety: skipping fsync makes them faster. The benchmark keeps the defaults.
        self.durable = durable

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd=self.workdir)

    def url(self, driver: str = "postgresql+asyncpg", database: str = "postgres") -> str:
        return f"{driver}://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.user:
            shutil.chown(self.workdir, self.user)
            shutil.chown(pwfile, self.user)
        proc = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr or proc.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        proc = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start", check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr or proc.stdout}\n{self.log_tail()}")
        wait_for(self.accepting, timeout=30, description=f"PostgreSQL on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, like a database going away under the operator."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def accepting(self) -> bool:
        proc = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
        return proc.returncode == 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PostgresServer:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisServer:
    """Debian's redis-server on a free 127.0.0.1 port, with a password, persisting nothing."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
        self.binary = binary
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="coordinator-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {REDIS_PASSWORD}\r\nPING\r\n".encode())
                time.sleep(0.05)
                return b"PONG" in sock.recv(100)
        except OSError:
            return False

    def start(self) -> None:
        """Start (or start again, on the same port and with nothing in it: it persists nothing)."""
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--requirepass",
                REDIS_PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.accepting, timeout=20, description=f"Redis on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop the server: what it held is gone (an outage, then a restart that comes back empty)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
