"""A private PostgreSQL server and PgBouncer for tests that must stop, break or front a server.

The machine's server (127.0.0.1:5432) is shared and never restarted. A test that needs a server to
go away starts its own: ``initdb`` + ``pg_ctl`` as the ``postgres`` OS user (PostgreSQL refuses to
run as root) in a temporary directory owned by that user, on a free loopback port, its unix socket
in that directory. It can be stopped (fast shutdown: clients are disconnected at once) and started
again on the same port and data directory, and it is always removed at the end — stopped by the
pid in its ``postmaster.pid`` if ``pg_ctl`` cannot.

:func:`start_pgbouncer` puts a PgBouncer (transaction pooling, the mode that cannot keep prepared
statements or session state) in front of any server and returns the URL to reach a database
through it. PgBouncer refuses to run as root, so it runs as ``postgres`` too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lock_support import free_port


def _newest_pg_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ.get("WARMUPD_TEST_PG_BIN") or _newest_pg_bin())
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
RUN_AS = "postgres"
"""The OS user both servers run as."""

Finalizer = Callable[[Callable[[], object]], object]
"""Registers a clean-up to run at the end of the test (``request.addfinalizer``)."""


def _require(path: str | Path, what: str) -> None:
    """Skip when a binary is missing — or fail, when env CI is set."""
    if Path(path).exists():
        return
    message = f"{what} not installed ({path})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _as_postgres(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user: setpriv execs in place, so a pid stays the child's.

    Not root (a developer's shell): as the current user, which both servers accept.
    """
    if os.geteuid() != 0:
        return argv
    return [
        "setpriv",
        f"--reuid={RUN_AS}",
        f"--regid={RUN_AS}",
        "--init-groups",
        "--reset-env",
        *argv,
    ]


def _owned_tempdir(prefix: str) -> Path:
    """A fresh directory under /tmp that the ``postgres`` user owns (pytest's tmp_path is root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _give(path)
    return path


def _give(path: Path) -> None:
    """Hand ``path`` to the ``postgres`` user (when we are root and may)."""
    if os.geteuid() == 0:
        shutil.chown(path, RUN_AS, RUN_AS)


def _wait_port(port: int, alive: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll until something accepts on ``127.0.0.1:port`` (bounded; fails when ``alive`` turns false)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


class PrivatePostgres:
    """A throw-away PostgreSQL 15 cluster: trust auth on loopback unless ``password`` is given.

    With ``password``, TCP connections need it (``scram-sha-256``) for every role, the superuser
    ``postgres`` included; the unix socket in :attr:`dir` stays ``trust`` for administration.
    """

    def __init__(self, *, password: str | None = None) -> None:
        _require(PG_BIN / "pg_ctl", "PostgreSQL server binaries")
        self.dir = _owned_tempdir("warmupd-pg-")
        self.data = self.dir / "data"
        self.port = free_port()
        self.password = password
        self.log = self.dir / "server.log"
        auth = "scram-sha-256" if password else "trust"
        pwfile: list[str] = []
        if password:
            secret = self.dir / "pwfile"
            secret.write_text(password + "\n")
            _give(secret)
            pwfile = [f"--pwfile={secret}"]
        try:
            self._initdb(auth, pwfile)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _initdb(self, auth: str, pwfile: list[str]) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D", str(self.data),
                    "-U", "postgres",
                    "--auth-local=trust",
                    f"--auth-host={auth}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    *pwfile,
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A password-free URL of ``database`` on this server."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from ``postmaster.pid``)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        """Start the server on :attr:`port` and wait until it accepts connections."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.dir}",
                "-c listen_addresses=127.0.0.1",
                # A test server: durability off, small, quick to start and stop.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=16MB",
                "-c max_connections=60",
            ]
        )
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                 "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected at once, like a lost server)."""
        if self.pid is None:
            return
        done = subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"]
            ),
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            self._kill()

    def _kill(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown, by the postmaster's own pid
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def execute(self, *statements: str, database: str = "postgres") -> str:
        """Run SQL through ``psql`` over the unix socket (trust); returns its output."""
        argv = [str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", database, "-v", "ON_ERROR_STOP=1", "-At"]
        for sql in statements:
            argv += ["-c", sql]
        return subprocess.run(
            _as_postgres(argv), check=True, capture_output=True, text=True, timeout=60
        ).stdout

    def cleanup(self) -> None:
        """Stop the server if it runs and remove its directory (idempotent)."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """A PgBouncer in transaction-pooling mode in front of ``server_host:server_port``."""

    def __init__(
        self, server_port: int, *, server_host: str = "127.0.0.1", pool_size: int = 20
    ) -> None:
        _require(PGBOUNCER, "pgbouncer")
        self.dir = _owned_tempdir("warmupd-pgbouncer-")
        self.port = free_port()
        self.ini = self.dir / "pgbouncer.ini"
        self.log = self.dir / "pgbouncer.log"
        users = self.dir / "userlist.txt"
        users.write_text('"postgres" ""\n')
        self.ini.write_text(
            "\n".join(
                [
                    "[databases]",
                    # Any database name is forwarded to the server, as user postgres.
                    f"* = host={server_host} port={server_port} user=postgres",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    f"unix_socket_dir = {self.dir}",
                    "auth_type = trust",
                    f"auth_file = {users}",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 500",
                    f"logfile = {self.log}",
                    f"pidfile = {self.dir / 'pgbouncer.pid'}",
                    # asyncpg may send it; PgBouncer would refuse a parameter it does not track.
                    "ignore_startup_parameters = extra_float_digits",
                    "",
                ]
            )
        )
        for path in (self.ini, users):
            _give(path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run PgBouncer in the foreground (its pid is ours to end) and wait for its port."""
        self.proc = subprocess.Popen(
            _as_postgres([PGBOUNCER, str(self.ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc
        _wait_port(self.port, lambda: proc.poll() is None)

    def url(self, database: str) -> str:
        """The URL of ``database`` through this PgBouncer."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def logs(self) -> str:
        """PgBouncer's own log."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """End PgBouncer by its pid and remove its directory (idempotent)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # PgBouncer's immediate shutdown
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_pgbouncer(
    server_port: int, database: str, *, finalizer: Finalizer, server_host: str = "127.0.0.1"
) -> str:
    """Start a transaction-mode PgBouncer in front of ``server_host:server_port``.

    :param database: the database the returned URL names (any name is forwarded).
    :param finalizer: registers the stop (e.g. ``request.addfinalizer``); it always runs.
    :returns: ``postgresql://postgres@127.0.0.1:<port>/<database>`` through PgBouncer (use it
        with ``[database] statement_cache = false``).
    """
    bouncer = PgBouncer(server_port, server_host=server_host)
    finalizer(bouncer.stop)
    bouncer.start()
    return bouncer.url(database)
