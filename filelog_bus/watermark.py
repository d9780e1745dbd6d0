"""The watermark: the offset up to which readers may read.

The writer publishes the end of the last record it has made durable (or merely
written, with ``durability="never"``) in the small ``watermark`` file, through a
shared memory map, after the record's fdatasync. Readers never read past it, so
they never see a record that a power loss could still erase and that the
writer's recovery could replace with a different record at the same offset.
The file itself is never fsync'd: after a crash the writer recomputes it.
"""

from __future__ import annotations

import mmap
import os
import time

from filelog_bus.errors import CorruptionError, NotABusError
from filelog_bus.fsutil import fsync_directory, open_or_explain
from filelog_bus.layout import (
    CLEAN_CLOSE_POSITION,
    FILE_HEADER_SIZE,
    WATERMARK_FILE_SIZE,
    WATERMARK_MAGIC,
    WATERMARK_NAME,
    CleanClose,
    LayoutError,
    decode_clean_close,
    decode_file_header,
    decode_watermark,
    encode_clean_close,
    encode_file_header,
    encode_watermark,
)

#: A slot torn by a concurrent update is re-read; a slot still bad after this long is damage.
_TORN_RETRY_SECONDS = 0.05


def watermark_path(directory: str) -> str:
    return os.path.join(directory, WATERMARK_NAME)


class WatermarkPublisher:
    """Writer side: create or repair the file, then publish offsets through a memory map."""

    def __init__(self, directory: str) -> None:
        self.path = watermark_path(directory)
        if not os.path.exists(self.path):
            self._create(directory)
        fd = open_or_explain(self.path, os.O_RDWR)
        try:
            try:
                decode_file_header(WATERMARK_MAGIC, os.pread(fd, FILE_HEADER_SIZE, 0))
            except LayoutError:
                os.pwrite(fd, encode_file_header(WATERMARK_MAGIC, 0), 0)
            os.ftruncate(fd, WATERMARK_FILE_SIZE)
            self._map = mmap.mmap(fd, WATERMARK_FILE_SIZE)
        finally:
            os.close(fd)

    def _create(self, directory: str) -> None:
        """Create the file whole under a temporary name, so readers never see it half-made."""
        temporary = self.path + ".new"
        fd = open_or_explain(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(
                fd,
                encode_file_header(WATERMARK_MAGIC, 0) + encode_watermark(0, True) + encode_clean_close(None),
            )
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        fsync_directory(directory)

    def publish(self, offset: int, durable: bool) -> None:
        """Let readers read up to ``offset``; ``durable`` says all of it has been fsync'd."""
        self._map[FILE_HEADER_SIZE:CLEAN_CLOSE_POSITION] = encode_watermark(offset, durable)

    def published(self) -> tuple[int, bool] | None:
        """The (offset, durable) pair published last, by this or an earlier writer; None if damaged."""
        return decode_watermark(self._map[FILE_HEADER_SIZE:CLEAN_CLOSE_POSITION])

    def take_clean_close(self) -> CleanClose | None:
        """Read the clean-close note and erase it: the bus is open for writing again."""
        note = decode_clean_close(self._map[CLEAN_CLOSE_POSITION:WATERMARK_FILE_SIZE])
        self._map[CLEAN_CLOSE_POSITION:WATERMARK_FILE_SIZE] = encode_clean_close(None)
        return note

    def leave_clean_close(self, note: CleanClose) -> None:
        self._map[CLEAN_CLOSE_POSITION:WATERMARK_FILE_SIZE] = encode_clean_close(note)

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()


class WatermarkReader:
    """Reader side: read the published offset with pread; never writes."""

    def __init__(self, directory: str) -> None:
        self.path = watermark_path(directory)
        try:
            self.fd = open_or_explain(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotABusError(
                f"{directory} has no watermark file: it is not a filelog-bus directory, or a writer "
                f"is creating it right now; check the path"
            ) from None
        header = os.pread(self.fd, FILE_HEADER_SIZE, 0)
        try:
            decode_file_header(WATERMARK_MAGIC, header)
        except LayoutError as exc:
            os.close(self.fd)
            raise CorruptionError(
                f"the watermark file is not readable: {exc}; open the bus once with a writer to rebuild it",
                path=self.path,
                offset=0,
            ) from None

    def read(self) -> int:
        deadline = None
        while True:
            slot = decode_watermark(
                os.pread(self.fd, CLEAN_CLOSE_POSITION - FILE_HEADER_SIZE, FILE_HEADER_SIZE)
            )
            if slot is not None:
                return slot[0]
            now = time.monotonic()
            if deadline is None:
                deadline = now + _TORN_RETRY_SECONDS
            elif now > deadline:
                raise CorruptionError(
                    "the watermark slot is damaged; open the bus once with a writer to rebuild it",
                    path=self.path,
                    offset=FILE_HEADER_SIZE,
                )
            time.sleep(0.001)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
