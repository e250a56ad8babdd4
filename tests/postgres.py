"""A throw-away PostgreSQL cluster for tests: `initdb` and `pg_ctl` from Debian's `postgresql`
(.ci/run installs it), in a temp folder, on a free 127.0.0.1 port, stopped after.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user. Clients
log in as a role with a password over TCP (scram-sha-256), as a team's server would have them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

# A generated secret as base64 gives it: a raw `/` in it (SQLAlchemy and psycopg accept it as is).
USER, PASSWORD, DATABASE = "exceedance", "pg/s3cret/9f41", "mlflow"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, **kwargs)


@contextmanager
def cluster(port: int):
    """Yield `postgresql://USER:PASSWORD@127.0.0.1:port/DATABASE` of a new, empty cluster.

    Its folder is a new one in the system's temp folder (pytest's are root's alone, which the
    `postgres` user cannot enter), removed after."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="exceedance-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    _as_owner(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"]
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off"
    _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start"])
    try:
        sql = f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'; CREATE DATABASE {DATABASE} OWNER {USER};"
        for statement in sql.split(";")[:-1]:
            _as_owner([str(bin_dir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-c", statement])
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(folder, ignore_errors=True)
