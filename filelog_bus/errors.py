"""Typed errors: every failure a user can cause has its own class.

Every error carries its facts as fields (h11's model): ``reason`` (what happened),
``path`` and ``file_position`` (which file, and where in it), ``offset`` (the bus
offset, when one is concerned) and ``advice`` (what an operator can do). ``str()``
composes them for people; code reads the fields, never the text. The CLI and the
Hermes plugins replace ``advice`` with words for their own users.
"""

from __future__ import annotations

from filelog_bus.compat import StrEnum


class FilelogBusError(Exception):
    """Base class of every error raised by filelog-bus."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        file_position: int | None = None,
        offset: int | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path
        self.file_position = file_position
        self.offset = offset
        self.advice = advice

    def where(self) -> str:
        """``path at file position N`` (as much of it as is known), or ""."""
        if self.path is None:
            return ""
        if self.file_position is None:
            return self.path
        return f"{self.path} at file position {self.file_position}"

    def __str__(self) -> str:
        text = self.reason
        where = self.where()
        if where and not _names_path(text, where):
            text += f" ({where})"
        if self.advice:
            text += f"; {self.advice}"
        return text


def _names_path(text: str, path: str) -> bool:
    """Whether ``text`` already names ``path`` in full (not as the start of a longer path), so that
    ``str()`` need not append it. Only a path with a separator counts: a bare relative name may be
    a word of the text."""
    if "/" not in path:
        return False
    start = text.find(path)
    while start >= 0:
        end = start + len(path)
        if (start == 0 or text[start - 1] in _AROUND_PATH) and (
            end == len(text) or text[end] in _AROUND_PATH
        ):
            return True
        start = text.find(path, start + 1)
    return False


#: What stands before or after a path in an error's text (a path ends at none of these).
_AROUND_PATH = " \t\n:;,()'\""


class ConfigError(FilelogBusError, ValueError):
    """A setting has an invalid value."""


class InvalidRecordError(FilelogBusError, ValueError):
    """A record cannot be appended: bad category, payload or size."""


class InvalidOffsetError(FilelogBusError, TypeError):
    """An offset is not a non-negative int."""


class NotABusError(FilelogBusError):
    """The path is not a filelog-bus directory (or does not exist)."""


class BusDeletedError(NotABusError):
    """The bus a reader was reading was deleted under it, or deleted and created again.

    ``recreated``: another bus (or another watermark file) is at the path now; the reader's
    positions mean nothing on it.
    """

    def __init__(self, reason: str, *, path: str, recreated: bool, advice: str | None = None) -> None:
        super().__init__(reason, path=path, advice=advice)
        self.recreated = recreated


class BusLockedError(FilelogBusError):
    """Another writer holds the bus's exclusive lock.

    ``lock_path`` is the lock file; ``holder`` the pid the holder wrote into it
    (as text; "unknown" if it wrote none).
    """

    def __init__(self, reason: str, *, lock_path: str, holder: str, advice: str | None = None) -> None:
        super().__init__(reason, path=lock_path, advice=advice)
        self.lock_path = lock_path
        self.holder = holder


class BusClosedError(FilelogBusError):
    """The writer or reader is not open: never opened, closed, or stopped after a failed write.

    ``failure`` is the error that stopped a writer (None when it was merely not open).
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        advice: str | None = None,
        failure: BaseException | None = None,
    ) -> None:
        super().__init__(reason, path=path, advice=advice)
        self.failure = failure


class BusIOError(FilelogBusError, OSError):
    """A system call on the bus's files failed (I/O error, too many open files, ...).

    ``errno`` is the system's error number.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        advice: str | None = None,
        errno: int | None = None,
    ) -> None:
        FilelogBusError.__init__(self, reason, path=path, offset=offset, advice=advice)
        self.errno = errno
        self.strerror = reason


class BusWriteError(BusIOError):
    """Writing to the bus failed (disk full, file too large, I/O error, too many open files).

    Nothing of the failed operation is visible to readers and earlier acknowledged records
    are untouched. The writer stops (fail-stop): later calls raise BusClosedError until a
    new writer is opened, which recovers the bus.
    """


class BusPermissionError(FilelogBusError, PermissionError):
    """The process lacks the file permissions the operation needs."""

    def __init__(
        self, reason: str, *, path: str | None = None, advice: str | None = None, errno: int | None = None
    ) -> None:
        FilelogBusError.__init__(self, reason, path=path, advice=advice)
        self.errno = errno
        self.strerror = reason


class DamageKind(StrEnum):
    """Which kind of damage a CorruptionError (and a check Problem) is about; the values are the words
    the CLI prints."""

    RECORD = "record"
    FILE_HEADER = "file-header"
    SEGMENT_GAP = "segment-gap"
    INDEX = "index"
    WATERMARK = "watermark"
    MISSING_SEGMENTS = "missing-segments"


class CorruptionError(FilelogBusError):
    """Bytes on disk do not match the format: damage, or not written by us.

    ``path`` and ``file_position`` say where, ``offset`` the bus offset when it is about a
    record, ``damage`` which kind.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        file_position: int | None = None,
        offset: int | None = None,
        damage: DamageKind = DamageKind.RECORD,
        advice: str | None = None,
    ) -> None:
        super().__init__(reason, path=path, file_position=file_position, offset=offset, advice=advice)
        self.damage = damage


class FileChange(StrEnum):
    """What happened to a file under a running process (``BusFileChangedError.change``)."""

    DELETED = "deleted"
    REPLACED = "replaced"
    TRUNCATED = "truncated"


class BusFileChangedError(CorruptionError):
    """A file the process holds open was deleted, replaced or truncated (or grown) by someone
    else: an operator, a clean-up job. ``change`` says which; ``path`` is the file."""

    def __init__(
        self, reason: str, *, path: str, change: FileChange, damage: DamageKind, advice: str | None = None
    ) -> None:
        super().__init__(reason, path=path, damage=damage, advice=advice)
        self.change = change


class UnsupportedFormatError(CorruptionError):
    """A file has a wrong magic number or a format version we cannot read."""


class OffsetOutOfRangeError(FilelogBusError, IndexError):
    """An offset is not on the bus; ``begin`` and ``end`` give the valid range."""

    def __init__(
        self,
        reason: str,
        *,
        offset: int,
        begin: int,
        end: int,
        path: str | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(
            f"{reason}: offset {offset} is outside the bus's range [{begin}, {end}]",
            path=path,
            offset=offset,
            advice=advice,
        )
        self.begin = begin
        self.end = end


class RecordsExpiredError(OffsetOutOfRangeError):
    """The reader's position was deleted by retention before it was read."""


class KafkaBusError(FilelogBusError):
    """The Kafka side of an export or a client migration failed.

    ``bootstrap_servers`` and ``topic`` name the Kafka side (None where not known yet).
    """

    def __init__(
        self,
        reason: str,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        offset: int | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(reason, offset=offset, advice=advice)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic


class KafkaMissingError(KafkaBusError):
    """kafka-python, which the Kafka commands need, is not installed (an optional extra)."""


class BrokerUnavailableError(KafkaBusError):
    """The Kafka broker cannot be reached, or did not acknowledge a request in time: running the
    command again once the broker is back goes on where it stopped."""


class BrokerRefusedError(KafkaBusError):
    """The Kafka broker answered with an error that retrying will not lift (not authorized, a
    timestamp or a policy it refuses...); ``kafka_error`` is the name of Kafka's error."""

    def __init__(
        self,
        reason: str,
        *,
        kafka_error: str,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(reason, bootstrap_servers=bootstrap_servers, topic=topic, advice=advice)
        self.kafka_error = kafka_error


class TopicMismatchError(KafkaBusError):
    """The topic cannot hold this bus: several partitions, messages that did not come from this
    bus, or a gap between what it holds and what the bus still has.

    ``kafka_offset`` is the message concerned, when there is one.
    """

    def __init__(
        self,
        reason: str,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        kafka_offset: int | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(reason, bootstrap_servers=bootstrap_servers, topic=topic, advice=advice)
        self.kafka_offset = kafka_offset


class ExportRunningError(KafkaBusError):
    """Another export of the same bus into the same topic runs; ``holder`` is its pid (as text,
    "unknown" when it cannot be told)."""

    def __init__(
        self, reason: str, *, holder: str, bootstrap_servers: str, topic: str, advice: str | None = None
    ) -> None:
        super().__init__(reason, bootstrap_servers=bootstrap_servers, topic=topic, advice=advice)
        self.holder = holder


class RecordTooLargeError(KafkaBusError):
    """A record is larger than one Kafka request may carry (``offset`` says which)."""


class ClientOffsetError(FilelogBusError):
    """A hermes-client's offset has no counterpart in the topic (or, going back, on the bus), so the
    client cannot be moved.

    ``path`` is the client's cache file, ``key`` the cache entry (``nextoffset`` ...), ``offset``
    the value it holds (a bus offset; a Kafka offset going back).
    """

    def __init__(self, reason: str, *, path: str, key: str, offset: int, advice: str | None = None) -> None:
        super().__init__(reason, path=path, offset=offset, advice=advice)
        self.key = key


class ClientCacheError(FilelogBusError):
    """A hermes-client cache file cannot be used: unreadable, not a hermes-client cache, or damaged."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)

    def where(self) -> str:
        return ""  # every message names the cache file already


class ClientRunningError(FilelogBusError):
    """A hermes-client seems to be running on the cache file a command would rewrite."""


class NotExportedYetError(ClientOffsetError):
    """The client's next event is on the bus but not in the topic yet: finish the export first."""
