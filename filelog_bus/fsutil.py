"""File-system helpers that turn OS errors a user can cause into errors that say what to do."""

from __future__ import annotations

import errno
import os
import stat

from filelog_bus.errors import BusPermissionError


def fsync_directory(path: str) -> None:
    """Make a file creation, rename or deletion in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_or_explain(path: str, flags: int, mode: int = 0o666) -> int:
    """os.open that turns a permission problem into a BusPermissionError saying what to do."""
    try:
        return os.open(path, flags | os.O_CLOEXEC, mode)
    except PermissionError as exc:
        access = "write" if flags & (os.O_WRONLY | os.O_RDWR) else "read"
        raise BusPermissionError(
            exc.errno or errno.EACCES,
            f"permission denied opening {path} to {access} it: run as a user that may {access} "
            f"the bus directory's files (see docs/RELIABILITY.md, 'Permissions')",
        ) from None


def stat_or_explain(path: str, purpose: str) -> os.stat_result | None:
    """os.stat, but None when ``path`` does not exist and BusPermissionError when it may not be looked at.

    (os.path.exists answers False on a permission error, which would send the user
    looking for a missing directory.)
    """
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        raise BusPermissionError(
            exc.errno or errno.EACCES,
            f"permission denied looking at {path} to {purpose}: the user running this process needs "
            f"search (x) permission on every directory above the bus and read permission on the bus "
            f"directory (see docs/RELIABILITY.md, 'Permissions')",
        ) from None


def is_directory(status: os.stat_result | None) -> bool:
    return status is not None and stat.S_ISDIR(status.st_mode)
