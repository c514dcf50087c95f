"""A real PostgreSQL server for tests: Debian's binaries (`make test` installs them when missing), a
fresh cluster in a temporary folder, run as an unprivileged user (the server refuses to run as root),
listening on a free loopback port and a socket in that folder. Stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.servers import free_port

SUPERUSER = "postgres"


def postgres_bin_dir() -> Path | None:
    """Where initdb and postgres live: on PATH, or Debian's versioned folder (newest first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    def __init__(self, bin_dir: Path, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.bin_dir = bin_dir
        self.listen = listen
        self.folder = Path(tempfile.mkdtemp(prefix="cdo-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server refuses root: run it as Debian's postgres user (or nobody)
            name = "postgres" if _user_exists("postgres") else "nobody"
            user = pwd.getpwnam(name)
            self.run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o700)
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **self.run_as,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                f"listen_addresses={','.join(self.listen)}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            **self.run_as,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.logs()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, the port is closed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            self.process.wait(timeout=30)
        self.process = None

    def allow_password_logins(self, network: str) -> None:
        """Clients from `network` (e.g. a container network) log in with a password; before `start`."""
        with (self.data / "pg_hba.conf").open("a") as rules:
            rules.write(f"host all all {network} scram-sha-256\n")

    def create_role(self, name: str, password: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")  # type: ignore[arg-type]

    def create_database(self, owner: str = SUPERUSER) -> str:
        """A new empty database; its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')  # type: ignore[arg-type]
        return self.url(name)

    def logs(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
