"""One trainer per run directory.

A trainer holds an exclusive ``flock`` on ``OUT/.trainer.lock`` for as long as it runs, and
writes its pid into the file. A second trainer on the same directory fails at once with
the first one's pid; a trainer that was killed (even with SIGKILL) holds nothing, because
the kernel drops a dead process's locks, so a stale file never blocks a new run. Readers
(eval, check, certify) never touch this file.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from llamacpu.core.isa import LlamacpuError

__all__ = ["LOCK_FILE", "RunDirBusy", "RunLock"]

LOCK_FILE = ".trainer.lock"


class RunDirBusy(LlamacpuError):
    """Another live trainer holds the run directory."""


class RunLock:
    """``with RunLock(out):`` — hold ``out`` for this trainer, or raise :class:`RunDirBusy`."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: nothing to hold (one trainer per directory by hand)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirBusy(f"{self.path.parent} is in use by a running trainer ({holder}); "
                             f"wait for it, or give this run another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing drops the lock; the file stays, harmlessly
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
