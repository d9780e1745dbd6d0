"""Typed errors: every failure a user can cause has its own class.

Each message says what happened, where (file and offset when there is one) and
what to do about it.
"""

from __future__ import annotations


class FilelogBusError(Exception):
    """Base class of every error raised by filelog-bus."""


class ConfigError(FilelogBusError, ValueError):
    """A setting has an invalid value."""


class InvalidRecordError(FilelogBusError, ValueError):
    """A record cannot be appended: bad category, payload or size."""


class InvalidOffsetError(FilelogBusError, TypeError):
    """An offset is not a non-negative int."""


class NotABusError(FilelogBusError):
    """The path is not a filelog-bus directory (or does not exist)."""


class BusLockedError(FilelogBusError):
    """Another writer holds the bus's exclusive lock.

    ``lock_path`` is the lock file; ``holder`` the pid the holder wrote into it
    (as text; "unknown" if it wrote none).
    """

    def __init__(self, message: str, *, lock_path: str, holder: str) -> None:
        super().__init__(message)
        self.lock_path = lock_path
        self.holder = holder


class BusClosedError(FilelogBusError):
    """The writer or reader is not open (never opened, closed, or broken)."""


class BusWriteError(FilelogBusError, OSError):
    """Writing to the bus failed (disk full, file too large, I/O error).

    Nothing of the failed append is visible to readers; earlier acknowledged
    records are untouched.
    """


class BusPermissionError(FilelogBusError, PermissionError):
    """The process lacks the file permissions the operation needs."""


class CorruptionError(FilelogBusError):
    """Bytes on disk do not match the format: damage, or not written by us.

    `path` and `offset` (a byte position inside that file, or None) say where.
    """

    def __init__(self, message: str, *, path: str, offset: int | None = None) -> None:
        where = f"{path}" if offset is None else f"{path} at file position {offset}"
        super().__init__(f"{message} ({where})")
        self.path = path
        self.offset = offset


class UnsupportedFormatError(CorruptionError):
    """A file has a wrong magic number or a format version we cannot read."""


class OffsetOutOfRangeError(FilelogBusError, IndexError):
    """An offset is not on the bus; the message gives the valid range."""

    def __init__(self, message: str, *, offset: int, begin: int, end: int) -> None:
        super().__init__(f"{message}: offset {offset} is outside the bus's range [{begin}, {end}]")
        self.offset = offset
        self.begin = begin
        self.end = end


class RecordsExpiredError(OffsetOutOfRangeError):
    """The reader's position was deleted by retention before it was read."""
