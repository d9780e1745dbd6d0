"""The writer lock: one writer per bus, whatever an operator deletes.

A writer holds two exclusive ``flock``s for as long as it is open:

* on the bus directory itself, through a descriptor of the directory. This is the lock that
  keeps a second writer out: it cannot be deleted, replaced or truncated without deleting the
  bus (a lock on a file that can be unlinked is bypassed by whoever unlinks it: the next
  writer locks a new file of the same name);
* on ``writer.lock``, as writers before this one did (they lock only that file), so that a
  writer of an older version and this one still exclude each other; the file also holds the
  holder's pid, as text, for people and tools.

The directory is locked with ``fcntl.flock`` itself, not ``portalocker``: portalocker takes a
file object (Python cannot open a directory as one), and it may be set up, process-wide, to
take POSIX record locks instead, which cannot be exclusive on a descriptor opened read-only,
as a directory's must be, and which the process loses when it closes any descriptor of the
directory (every ``fs.fsync_directory`` does). ``writer.lock`` keeps portalocker (an ``flock``
there too), exactly as before.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from typing import IO

import portalocker

from filelog_bus import fs
from filelog_bus.errors import (
    BusFileChangedError,
    BusLockedError,
    DamageKind,
    FileChange,
)
from filelog_bus.layout import LOCK_NAME

_RETRY_SECONDS = 0.05
_PROC_LOCKS = "/proc/locks"


class WriterLock:
    """Both locks of one writer; ``close()`` releases them (the directory's last)."""

    def __init__(self, directory: str, directory_fd: int) -> None:
        self.directory = directory
        self._directory_fd = directory_fd
        self._lock_file: IO[str] | None = None

    @classmethod
    def acquire(cls, directory: str, timeout: float | None) -> WriterLock:
        """Lock the bus at ``directory`` for writing, waiting up to ``timeout`` seconds (None: for
        ever); BusLockedError naming the holder when another writer keeps it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lock_path = os.path.join(directory, LOCK_NAME)
        # Owned by the lock object before it is locked: an interrupt landing anywhere after (up to the
        # caller's assignment) drops the object, whose __del__ closes the descriptor and so unlocks.
        lock = cls(directory, fs.open_or_explain(directory, os.O_RDONLY | os.O_DIRECTORY))
        directory_fd = lock._directory_fd
        try:
            if not _wait_for(lambda: fcntl.flock(directory_fd, fcntl.LOCK_EX | fcntl.LOCK_NB), deadline):
                raise _locked(directory, lock_path, _holder(directory_fd, lock_path), timeout)
            fd = fs.open_or_explain(lock_path, os.O_RDWR | os.O_CREAT)
            lock_file = lock._lock_file = os.fdopen(fd, "r+", encoding="ascii")  # closing it unlocks
            if not _wait_for(
                lambda: portalocker.lock(lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB), deadline
            ):  # held by a writer of an older version, which locks only writer.lock
                raise _locked(directory, lock_path, _holder(fd, lock_path), timeout)
            fs.ftruncate(fd, 0)
            fs.pwrite_all(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            lock.close()
            raise
        return lock

    def check_held(self) -> None:
        """BusFileChangedError if the bus's path no longer names the directory this lock holds: the
        bus was deleted (and maybe created again, by another writer) under this writer, which must
        then create, rename or delete nothing by that path."""
        held = os.fstat(self._directory_fd)
        try:
            named = os.stat(self.directory)
        except FileNotFoundError:
            change = FileChange.DELETED
        else:
            if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                return
            change = FileChange.REPLACED
        raise BusFileChangedError(
            f"the bus directory was {change} under the writer (by another process: the writer never does it)",
            path=self.directory,
            change=change,
            damage=DamageKind.MISSING_SEGMENTS,
            advice="the writer stopped and writes nothing more there; what the bus held is gone with the "
            "directory (see docs/RELIABILITY.md, 'What an operator may delete')",
        )

    def close(self) -> None:
        """Release both locks. Idempotent; the directory's lock is released even if the other fails."""
        lock_file, self._lock_file = self._lock_file, None
        try:
            if lock_file is not None:
                lock_file.close()
        finally:
            # The descriptor stays ours (``__del__`` closes it) until the bus is unlocked: an interrupt
            # landing anywhere before must not leave it locked by a descriptor nobody will close.
            directory_fd = self._directory_fd
            if directory_fd >= 0:
                try:
                    fcntl.flock(directory_fd, fcntl.LOCK_UN)
                finally:
                    self._directory_fd = -1
                    fs.close(directory_fd)

    def __del__(self) -> None:
        # Dropped without close() (with a LogWriter dropped open): closing the descriptor releases
        # the bus, as dropping the lock file's object releases writer.lock.
        directory_fd = getattr(self, "_directory_fd", -1)  # (-1: __init__ was cut short)
        if directory_fd >= 0:
            os.close(directory_fd)


def _wait_for(try_lock: Callable[[], object], deadline: float | None) -> bool:
    """Call ``try_lock`` (a non-blocking lock) until it succeeds (True) or the deadline passes (False)."""
    while True:
        try:
            try_lock()
            return True
        except (BlockingIOError, portalocker.LockException):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_RETRY_SECONDS)


def _locked(directory: str, lock_path: str, holder: str, timeout: float | None) -> BusLockedError:
    return BusLockedError(
        f"another writer (pid {holder}) holds the bus at {directory} (its lock file {lock_path}; "
        f"waited {timeout} s)",
        lock_path=lock_path,
        holder=holder,
        advice="only one writer may append to a bus; stop the other writer, or wait for it (lock_timeout). "
        "Deleting writer.lock does not release the lock: the writer holds the bus directory itself",
    )


def _holder(locked_fd: int, lock_path: str) -> str:
    """The pid of the process holding the flock on ``locked_fd``'s file, as text: from the kernel's
    table of locks (right even when writer.lock was deleted or overwritten), else what writer.lock
    says, else "unknown"."""
    return _pid_in_proc_locks(os.fstat(locked_fd)) or _pid_in_lock_file(lock_path) or "unknown"


def _pid_in_proc_locks(status: os.stat_result) -> str | None:
    """The pid /proc/locks gives for an flock on the file of ``status``; None where there is none
    to read (another OS, /proc not mounted, the holder in another pid namespace: pid 0)."""
    wanted = (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
    try:
        with open(_PROC_LOCKS, encoding="ascii", errors="replace") as table:
            lines = table.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" lines are waiters, not holders
            continue
        pid, file_id = fields[4], fields[5].split(":")
        try:
            found = (int(file_id[0], 16), int(file_id[1], 16), int(file_id[2]))
        except (IndexError, ValueError):
            continue
        if found == wanted and pid.isdigit() and pid != "0":
            return pid
    return None


def _pid_in_lock_file(lock_path: str) -> str | None:
    try:
        text = fs.read_file(lock_path)[:64].decode("ascii", "replace").strip()
    except OSError:
        return None
    return text or None
