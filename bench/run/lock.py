"""One `bench run` per suite results folder at a time: an advisory `flock` on a lock file there.

The lock file (`.bench-run.lock`) holds the holder's PID and host so the refused second run can
name it. `flock` is released by the kernel when its process dies, so a lock left by a killed run
is stale by construction: the next run takes it. On release the file is removed; a taker checks
that the file it locked is still the one at the path (the classic unlink race). The per-run claims
of the scale-out work can replace this module; `suite_lock` is its only interface.
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from bench.errors import BenchError

LOCK = ".bench-run.lock"


@contextmanager
def suite_lock(folder: str | Path):
    """Hold the suite folder's lock for the block; BenchError naming the holder if it is taken."""
    path = Path(folder) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        if _same_file(path, fd):
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the flock


def _acquire(path: Path) -> int:
    for _ in range(10):  # retried only when a releasing holder removed the file under us
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BenchError(f"{path.parent}: another `bench run` ({holder(path)}) is running this "
                             f"suite into this results folder; wait for it to finish, or use "
                             f"another --results") from None
        if _same_file(path, fd):
            return fd
        os.close(fd)
    raise BenchError(f"{path}: could not take the run lock (the file keeps changing)")


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def holder(path: str | Path) -> str:
    """`PID 123 on host` of the lock's holder, as written in the file."""
    try:
        pid, _, host = Path(path).read_text().strip().partition(" ")
    except OSError:
        return "PID unknown"
    return f"PID {pid} on {host}" if pid else "PID unknown"
