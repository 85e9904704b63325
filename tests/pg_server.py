"""A throwaway PostgreSQL server on localhost for the shared-storage tests.

Uses the distribution's server binaries (Debian: `apt-get install -y postgresql`, which puts
`initdb` and `pg_ctl` in /usr/lib/postgresql/<version>/bin); initdb refuses to run as root, so as
root the cluster belongs to the `postgres` user (`runuser`). The cluster lives in a temporary folder,
listens on a free localhost port with trust authentication, and is removed afterwards. Tests that
use the fixture are skipped, with the reason, when the binaries or psycopg2 are missing.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """`postgresql+psycopg2://postgres@localhost:PORT/bench` on a fresh cluster."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 missing (pip install psycopg2-binary)")
    root, prefix = tempfile.mkdtemp(prefix="bench-pg-"), []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to own the cluster")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), os.path.join(root, "data")
    try:
        subprocess.run([*prefix, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*prefix, pg_ctl, "-D", data, "-l", os.path.join(root, "log"), "-w", "-o",
                        f"-p {port} -k {root} -c listen_addresses=localhost -c fsync=off", "start"],
                       check=True, capture_output=True)
        conn = psycopg2.connect(host="localhost", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE bench")
        conn.close()
        yield f"postgresql+psycopg2://postgres@localhost:{port}/bench"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
