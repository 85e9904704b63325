"""Per-run claims: which process trains a run (or evaluates a variant) now, so that any number of
workers, `bench run` commands, Slurm jobs or machines can share one results folder.

A claim is the file `<run folder>/.claim`, created with `O_CREAT | O_EXCL` (only one creator wins)
and holding its owner's pid, host, token and start time as JSON; its mtime is the heartbeat, renewed
by a daemon thread every `stale / 4` seconds while the owner works (as Optuna's heartbeat thread
does for trials). A claim is stale when its heartbeat is older than `stale` seconds (`$BENCH_CLAIM_STALE_S`,
default 120), or at once when its owner is on this host and that process is gone. A stale claim is
taken over by `rename` to a name unique to the taker: of two takers only one rename succeeds, and a
taker that finds it moved a claim other than the stale one it saw (same inode and token) puts it
back; the taker then creates its claim exclusively like anyone (a process that found no claim in
between may win instead: still exactly one owner). An owner whose claim was taken over (its heartbeat thread sees another file at the path)
stops at its next evaluation (`ClaimLost`) without writing. Clocks of the machines sharing a folder
are assumed to agree to within a fraction of `stale` (NFS mtimes are the server's).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from bench.errors import BenchError

CLAIM = ".claim"
STALE_ENV = "BENCH_CLAIM_STALE_S"
DEFAULT_STALE_S = 120.0
T = TypeVar("T")


class ClaimLost(BaseException):
    """This process's claim was taken over by another (its heartbeat went stale): stop, write nothing."""


def stale_seconds() -> float:
    """The heartbeat age after which a claim is stale: `$BENCH_CLAIM_STALE_S` or 120 s."""
    text = os.environ.get(STALE_ENV, "")
    if not text:
        return DEFAULT_STALE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise BenchError(f"${STALE_ENV}: {text!r} is not a positive number of seconds")
    return value


def owner(folder: str | Path) -> dict | None:
    """The claim of a run folder: its JSON plus `age` (seconds since the last heartbeat) and
    `alive` (False when the owner is on this host and its process is gone, else None: unknown);
    None when the run is not claimed. A claim still being written reads as `{}` plus those keys."""
    path = Path(folder) / CLAIM
    try:
        st = os.stat(path)
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data.update(age=max(0.0, time.time() - st.st_mtime), inode=st.st_ino,
                alive=_alive(data.get("pid")) if data.get("host") == socket.gethostname() else None)
    return data


def is_stale(info: dict, stale: float) -> bool:
    return info["alive"] is False or info["age"] > stale


def describe(info: dict) -> str:
    """`PID 123 on host, heartbeat 4 s ago` for logs and `bench status`."""
    job = f" (Slurm job {info['slurm_job']})" if info.get("slurm_job") else ""
    who = f"PID {info.get('pid', '?')} on {info.get('host', '?')}{job}"
    gone = ", process gone" if info.get("alive") is False else ""
    return f"{who}, heartbeat {info['age']:.0f} s ago{gone}"


class Claim:
    """A held claim: its heartbeat thread runs until `release()`; `lost` if it was taken over."""

    def __init__(self, path: Path, token: str, stale: float, took_over: dict | None = None):
        self.path, self.token, self.took_over, self.lost = path, token, took_over, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(max(0.05, min(30.0, stale / 4)),),
                                        daemon=True, name=f"claim {path.parent.name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self.held():
                self.lost = True
                return
            try:
                os.utime(self.path)
            except OSError:  # removed between the check and the touch: lost too
                self.lost = True
                return

    def held(self) -> bool:
        """Whether the claim file is still this one (its token: inode numbers are reused)."""
        try:
            return _token(self.path.read_text()) == self.token
        except OSError:
            return False

    def check(self, phase: str = "", ctx=None) -> None:
        """A run hook (`hook(phase, ctx)`): raise ClaimLost once the claim was taken over."""
        if self.lost:
            raise ClaimLost(f"{self.path}: claim taken over by another worker")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(folder: str | Path, stale: float | None = None) -> Claim | None:
    """Claim a run folder (created if needed); None when a live owner holds it. A stale claim is
    taken over (the Claim's `took_over` is the previous owner's `owner()`)."""
    stale = stale_seconds() if stale is None else stale
    path = Path(folder) / CLAIM
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # retried only when the claim vanished between two looks
        token = _create(path)
        if token is not None:
            return Claim(path, token, stale)
        info = owner(folder)
        if info is None:
            continue
        if not is_stale(info, stale):
            return None
        if _take_over(path, info):
            token = _create(path)
            return Claim(path, token, stale, took_over=info) if token is not None else None
    return None


def _create(path: Path) -> str | None:
    """Create the claim file exclusively with this process's record; its token, or None if taken."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
                  "started": time.time(), "slurm_job": _slurm_job()}
        os.write(fd, (json.dumps(record) + "\n").encode())
        return record["token"]
    finally:
        os.close(fd)


def _slurm_job() -> str | None:
    """This process's Slurm job as `squeue` shows it (`123_4` for a job array task), or None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _take_over(path: Path, seen: dict) -> bool:
    """Move the stale claim `seen` out of the way; True if this process moved exactly that one."""
    moved = path.with_name(f"{CLAIM}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return False  # another taker (or the owner's release) was first
    try:
        st, text = os.stat(moved), moved.read_text()
        same = st.st_ino == seen["inode"] and _token(text) == seen.get("token")
        if not same:  # a fresh claim made after our look: give it back (unless a third made one)
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
        return same
    finally:
        moved.unlink(missing_ok=True)


def _token(text: str):
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return None
    return data.get("token") if isinstance(data, dict) else None


def _alive(pid) -> bool:
    """Whether process `pid` of this host exists and is not a zombie."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child nobody reaped yet is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def claimed(items: Iterable[T], folder_of: Callable[[T], Path], pending: Callable[[T], bool], *,
            log: Callable[[str], None] = print, wait: bool = True,
            label: Callable[[T], str] = str) -> Iterator[tuple[T, Claim]]:
    """Yield `(item, claim)` for each item still `pending` that this process claims, in order; the
    claim is held until the consumer asks for the next item. Items a live owner holds are revisited
    (with `wait`) every second until they are no longer pending or their claim goes stale."""
    stale, todo, told = stale_seconds(), list(items), set()
    while todo:
        held = []
        for item in todo:
            if not pending(item):
                continue
            claim = try_claim(folder_of(item), stale)
            if claim is None:
                info = owner(folder_of(item))
                if id(item) not in told and info is not None:
                    log(f"{label(item)}: claimed by {describe(info)}; "
                        f"{'taking the next run; back to it later' if wait else 'skipped'}")
                    told.add(id(item))
                held.append(item)
                continue
            with claim:
                if claim.took_over is not None:
                    log(f"{label(item)}: took over the stale claim of {describe(claim.took_over)}")
                yield item, claim
        if not held or not wait:
            return
        time.sleep(min(1.0, stale / 4))
        todo = held
