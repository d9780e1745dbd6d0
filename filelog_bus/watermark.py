"""The watermark: the offset up to which readers may read.

The writer publishes the end of the last record it has made durable (or merely
written, with ``durability="never"``) in the small ``watermark`` file, with one
16-byte ``pwrite`` after the record's fdatasync. Not through a shared mapping, although a
store into one costs less (benchmarks/RESULTS.md, "The watermark published with a pwrite"): a store into a mapped file that
someone truncated kills the process with SIGBUS, which Python cannot catch, where a
``pwrite`` cannot fail that way (see ``check_in_place``). Readers never
read past it, so they never see a record that a power loss could still erase and
that the writer's recovery could replace with a different record at the same offset. Publishing does not
fsync the file (after a crash the writer recomputes it). The file is fsync'd only
where recovery depends on what it says: when it is created; when a writer of the
other durability opens the bus, or holds deferred appends (the unsynced-writer
flag); and before the first write after the clean-close note was erased.
"""

from __future__ import annotations

import os
import time

from filelog_bus import fs
from filelog_bus.errors import (
    BusFileChangedError,
    CorruptionError,
    DamageKind,
    FileChange,
    NotABusError,
)
from filelog_bus.layout import (
    CLEAN_CLOSE_POSITION,
    FILE_HEADER_SIZE,
    WATERMARK_FILE_SIZE,
    WATERMARK_MAGIC,
    WATERMARK_NAME,
    CleanClose,
    LayoutError,
    Watermark,
    decode_clean_close,
    decode_file_header,
    decode_watermark,
    encode_clean_close,
    encode_file_header,
    encode_watermark,
)
from filelog_bus.wakeup import Waker

#: A slot torn by a concurrent update is re-read; a slot still bad after this long is damage.
_TORN_RETRY_SECONDS = 0.05


def watermark_path(directory: str) -> str:
    return os.path.join(directory, WATERMARK_NAME)


class WatermarkPublisher:
    """Writer side: create or repair the file, then publish offsets in place."""

    def __init__(self, directory: str, *, unsynced_writer: bool) -> None:
        self.path = watermark_path(directory)
        self.unsynced_writer = unsynced_writer
        self._holding_unsynced = False
        self._last = (0, True)
        self._waker: Waker | None = None
        #: A clean-close note was erased, and the erasure is not durable yet.
        self.erasure_pending = False
        if fs.stat_or_explain(self.path, "open the watermark") is None:
            self._create(directory)
        self.fd = fs.open_or_explain(self.path, os.O_RDWR)
        try:
            try:
                decode_file_header(WATERMARK_MAGIC, os.pread(self.fd, FILE_HEADER_SIZE, 0))
            except LayoutError:
                fs.pwrite_all(self.fd, encode_file_header(WATERMARK_MAGIC, 0), 0)
            if os.fstat(self.fd).st_size != WATERMARK_FILE_SIZE:
                fs.ftruncate(self.fd, WATERMARK_FILE_SIZE)
            self._waker = Waker.open(self.fd)
        except BaseException:
            self.close()
            raise

    def _create(self, directory: str) -> None:
        """Create the file whole and durably under a temporary name, so nobody sees it half-made."""
        fs.write_file_atomically(
            self.path,
            encode_file_header(WATERMARK_MAGIC, 0)
            + encode_watermark(0, True, self.unsynced_writer)
            + encode_clean_close(None),
        )
        fs.fsync_directory(directory)

    def publish(self, offset: int, durable: bool, *, synced: bool = False) -> None:
        """Let readers read up to ``offset``; ``durable`` says all of it has been fsync'd.

        ``synced``: every deferred append was just synced too (see ``hold_unsynced``).
        """
        if durable and os.lseek(self.fd, 0, os.SEEK_END) != WATERMARK_FILE_SIZE:
            self.check_in_place()  # truncated (or grown): raises
        if synced:
            self._holding_unsynced = False
        unsynced = self.unsynced_writer or self._holding_unsynced
        fs.pwrite_all(self.fd, encode_watermark(offset, durable, unsynced), FILE_HEADER_SIZE)
        if self._waker is not None:
            self._waker.published()  # readers waiting in wakeup.Waiter
        self._last = (offset, durable)

    def check_in_place(self) -> None:
        """BusFileChangedError if the file was deleted, replaced or truncated since it was opened.

        Readers that open the bus from now on would not see what is published here, so the
        writer stops (fail-stop) and the next open rebuilds the file. One fstat, made at each roll,
        ``sync()`` and ``close()``. Not per append: a stat of a file makes the next write into it
        update its times to the nanosecond (Linux 6.13's multigrain timestamps), which dirties the
        inode on every publication and slowed durable appends (benchmarks/RESULTS.md, "The
        watermark published with a pwrite"). Before each durable publication, ``publish`` sees a
        truncation with an ``lseek``, which asks for no times and costs nothing measurable there.
        """
        status = os.fstat(self.fd)
        if status.st_nlink and status.st_size == WATERMARK_FILE_SIZE:
            return
        if status.st_nlink:
            change = FileChange.TRUNCATED
        else:
            change = FileChange.REPLACED if os.path.lexists(self.path) else FileChange.DELETED
        raise BusFileChangedError(
            f"the watermark file was {change} under the writer (by another process: the writer never does it)",
            path=self.path,
            change=change,
            damage=DamageKind.WATERMARK,
            advice="the writer stopped, and earlier records are intact; open a new writer, which rebuilds "
            "the file (see docs/RELIABILITY.md, 'What an operator may delete')",
        )

    def hold_unsynced(self) -> None:
        """Say, durably, before a syncing writer leaves appends unsynced (deferred), that it does.

        Recovery then treats a hole past the last durable point as the loss of unsynced pages
        (and cuts there) instead of as damage to acknowledged records.
        """
        if self.unsynced_writer or self._holding_unsynced:
            return
        self._holding_unsynced = True
        self.publish(*self._last)
        fs.fsync(self.fd)

    def publish_at_open(self, offset: int, previous: Watermark | None) -> None:
        """Publish the recovered end; sync the file when it must now say the writer's durability."""
        self.publish(offset, durable=True)
        if previous is None or previous.unsynced_writer != self.unsynced_writer:
            fs.fsync(self.fd)

    def published(self) -> Watermark | None:
        """The watermark published last, by this or an earlier writer; None if damaged."""
        return decode_watermark(os.pread(self.fd, CLEAN_CLOSE_POSITION - FILE_HEADER_SIZE, FILE_HEADER_SIZE))

    def take_clean_close(self) -> CleanClose | None:
        """Read the clean-close note and erase it: the bus is open for writing again.

        The erasure is made durable by ``before_first_write``: a note that survived a power cut
        would vouch for a segment whose later, unsynced writes were lost in any order.
        """
        note = decode_clean_close(
            os.pread(self.fd, WATERMARK_FILE_SIZE - CLEAN_CLOSE_POSITION, CLEAN_CLOSE_POSITION)
        )
        if note is not None:
            fs.pwrite_all(self.fd, encode_clean_close(None), CLEAN_CLOSE_POSITION)
            self.erasure_pending = True
        return note

    def before_first_write(self) -> None:
        """Make the clean-close note's erasure durable, once, before the bus's files change."""
        fs.fsync(self.fd)
        self.erasure_pending = False

    def leave_clean_close(self, note: CleanClose) -> None:
        self.check_in_place()  # a note is never left in a file that is no longer the bus's
        fs.pwrite_all(self.fd, encode_clean_close(note), CLEAN_CLOSE_POSITION)

    def close(self) -> None:
        waker, self._waker = self._waker, None
        try:
            if waker is not None:
                waker.close()  # joins its thread: an interrupt may land there
        finally:
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                fs.close(fd)


class WatermarkReader:
    """Reader side: read the published offset with pread; never writes."""

    def __init__(self, directory: str) -> None:
        self.path = watermark_path(directory)
        #: Whether the offset read last had been made durable (an unsynced writer publishes it before).
        self.durable = True
        try:
            self.fd = fs.open_or_explain(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotABusError(
                f"{directory} has no watermark file: it is not a filelog-bus directory, or a writer "
                f"is creating it right now",
                path=directory,
                advice="check the path",
            ) from None
        header = os.pread(self.fd, FILE_HEADER_SIZE, 0)
        try:
            decode_file_header(WATERMARK_MAGIC, header)
        except LayoutError as exc:
            self.close()
            raise CorruptionError(
                f"the watermark file is not readable: {exc}",
                path=self.path,
                file_position=0,
                damage=DamageKind.WATERMARK,
                advice="open the bus once with a writer to rebuild it",
            ) from None

    def read(self) -> int:
        """The published offset; ``durable`` then says whether everything below it was fsync'd."""
        deadline = None
        while True:
            slot = decode_watermark(
                os.pread(self.fd, CLEAN_CLOSE_POSITION - FILE_HEADER_SIZE, FILE_HEADER_SIZE)
            )
            if slot is not None:
                self.durable = slot.durable
                return slot.offset
            now = time.monotonic()
            if deadline is None:
                deadline = now + _TORN_RETRY_SECONDS
            elif now > deadline:
                raise CorruptionError(
                    "the watermark slot is damaged",
                    path=self.path,
                    file_position=FILE_HEADER_SIZE,
                    damage=DamageKind.WATERMARK,
                    advice="open the bus once with a writer to rebuild it",
                )
            time.sleep(0.001)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            fs.close(fd)


def read_published(directory: str) -> int:
    """The offset published in the bus at ``directory`` now (NotABusError without a watermark file)."""
    reader = WatermarkReader(directory)
    try:
        return reader.read()
    finally:
        reader.close()
