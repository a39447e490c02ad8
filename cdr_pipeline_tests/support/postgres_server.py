"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, on 127.0.0.1.

`initdb` makes a cluster in a temporary folder (password authentication, a `dagster` role and
database), `pg_ctl` starts it on a free loopback port and stops it afterwards. PostgreSQL refuses
to run as root: as root, the server runs as Debian's `postgres` system user (the package creates
it), which then owns the folder. A missing binary is a failure naming the package, never a skip:
`.ci/run` installs it.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from cdr_pipeline_tests.support.dagster_processes import free_port

USER = "dagster"
DATABASE = "dagster"
# Debian installs the server outside PATH, under /usr/lib/postgresql/<major>/bin.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bin_dir() -> Path:
    """The folder holding initdb and pg_ctl, or a test failure saying what to install."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob(DEBIAN_BIN_GLOB), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")


def server_user() -> pwd.struct_passwd:
    """Debian's `postgres` system user, which runs the server when we are root."""
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no `postgres` user to run PostgreSQL as: install Debian's postgresql package")


class PostgresServer:
    """One PostgreSQL cluster on a free 127.0.0.1 port (see `running_postgres`)."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.host = "127.0.0.1"
        self.bin_dir = postgres_bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="cdr-postgres-"))
        self.data_dir = self.folder / "cluster"
        self.log_path = self.folder / "server.log"
        self._user = server_user() if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        """Run a server binary, as `postgres` when we are root."""
        ids = {}
        if self._user is not None:
            ids = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            **ids,
        )
        if result.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{log}")

    def start(self) -> "PostgresServer":
        """initdb, start on loopback, create the `dagster` database."""
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if self._user is not None:
            for path in (self.folder, password_file):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", USER, f"--pwfile={password_file}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale",
        )  # fmt: skip
        password_file.unlink()
        # Loopback only, the socket in our folder; durability is not what a test needs.
        options = f"-h {self.host} -p {self.port} -k {self.folder} -c fsync=off"
        options += " -c full_page_writes=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_path),
                  "-w", "-t", "60", "start")  # fmt: skip
        with contextlib.closing(self.connect("postgres")) as con:
            con.autocommit = True
            con.cursor().execute(f"CREATE DATABASE {DATABASE}")
        return self

    def connect(self, database: str = DATABASE) -> "psycopg2.extensions.connection":
        """A client connection as the `dagster` role."""
        return psycopg2.connect(
            host=self.host, port=self.port, user=USER, password=self.password, dbname=database
        )

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that select this server."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": DATABASE,
        }

    def dump(self) -> str:
        """pg_dump of the `dagster` database, as SQL text."""
        result = subprocess.run(
            [str(self.bin_dir / "pg_dump"), "-h", self.host, "-p", str(self.port), "-U", USER,
             DATABASE],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )  # fmt: skip
        return result.stdout

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(password: str) -> Iterator[PostgresServer]:
    """A started server, stopped (and its folder deleted) at the end."""
    server = PostgresServer(password)
    try:
        yield server.start()
    finally:
        server.stop()
