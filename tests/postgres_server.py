"""A throwaway PostgreSQL server for the tests: Debian's binaries (`pg_config --bindir`), a cluster in a temporary
folder, reachable on a Unix socket only, removed afterwards.

`initdb` refuses to run as root; as root the cluster is created and run as the `postgres` system user that
Debian's package creates. RECUNLEARN_TEST_POSTGRES (the URL of an empty database) replaces all this with a
server of your own.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

URL_ENV = "RECUNLEARN_TEST_POSTGRES"


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl, or None when PostgreSQL is not installed."""
    pg_config = shutil.which("pg_config")
    candidates = []
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a cluster, yield its SQLAlchemy URL, stop and delete it."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb from `pg_config --bindir`): install Debian's "
                           "postgresql package, or set RECUNLEARN_TEST_POSTGRES to a database URL")
    folder = Path(tempfile.mkdtemp(prefix="recunlearn-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    try:
        run = lambda *args: subprocess.run(_as_server_user([str(a) for a in args]), check=True,   # noqa: E731
                                           capture_output=True, text=True)
        run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # No TCP port: the socket lives in the cluster's folder, so parallel runs never collide.
        options = f"-k {folder} -c listen_addresses='' -c fsync=off -c max_connections=40"
        run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "server.log", "-w", "start")
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={folder}"
        finally:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"could not start a throwaway PostgreSQL ({' '.join(err.cmd[:3])}...): "
                           f"{err.stderr.strip() or err.stdout.strip()}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def drop_everything(url: str) -> None:
    """Leave the database empty for the next test: the ledger's tables, Alembic's and the trigger function."""
    from sqlalchemy import create_engine, text

    from recunlearn.service.ledger import Base

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
            connection.execute(text("DROP FUNCTION IF EXISTS suppression_is_permanent() CASCADE"))
    finally:
        engine.dispose()
