"""The standby file: the next segment's space, zero-filled and durable before a roll needs it.

Appends overwrite space the active segment's file already has, so that a durable append
is one fdatasync of data (docs/FORMAT.md). ``posix_fallocate`` is not enough for that:
on ext4 the space it gives is *unwritten*, and the first write to each part of it is
converted in a journal commit that the append's fdatasync waits for. Writing the zeros
does the conversion once, ahead of the appends, which for a whole segment is too long to
stall an append for (benchmarks/RESULTS.md, "Creating a bus"). So the writer prepares the next segment's file while it appends to
the current one (``StandbyPreparer``: a background thread, from the moment the active
segment is half full), and a roll only renames it into place (``take``). A segment of
less than ``BACKGROUND_BYTES`` is zero-filled at the roll itself (``fill_zeros``), which
costs about as much as the roll's other fsyncs.

The standby is not part of the bus: it holds no record and no reader opens it. It is
written under a temporary name (deleted by the next open, should a crash cut it short)
and renamed once complete and fsync'd. Failing to prepare it costs only speed: the roll
then zero-fills the new segment itself, where a persistent failure surfaces as usual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading

from filelog_bus import fs
from filelog_bus.layout import STANDBY_NAME, TEMPORARY_SUFFIX

#: Segments at least this large (with their header) get their standby from a background thread.
BACKGROUND_BYTES = 4 * 2**20
#: The standby is prepared only while the disk has this many times its size free.
RESERVE_FACTOR = 2
#: Errors that mean "no space for the zeros": the file then grows as records are appended.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: How long a new thread waits to be adopted by ``start`` (an interrupt in between) before giving up.
_ADOPTION_SECONDS = 5.0


def standby_path(directory: str) -> str:
    return os.path.join(directory, STANDBY_NAME)


def fill_zeros(fd: int, start: int, end: int) -> bool:
    """Write zeros over [start, end) of ``fd`` (``fs.write_zeros``); False if the disk filled up first."""
    position = start
    while position < end:
        try:
            position += fs.write_zeros(fd, end - position, position)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                return False
            raise
    return True


def prepare(directory: str, size: int) -> bool:
    """Write the standby: ``size`` zero bytes, fsync'd, then renamed into place. False if the disk is full.

    Whatever happens, no temporary file is left behind (a crash's is removed by the next open).
    """
    path = standby_path(directory)
    temporary = path + TEMPORARY_SUFFIX
    try:
        fd = fs.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            complete = fill_zeros(fd, 0, size)
            if complete:
                fs.fsync(fd)
        finally:
            fs.close(fd)
        if complete:
            fs.replace(temporary, path)  # no directory fsync: losing the standby to a power cut loses nothing
            return True
    except BaseException:
        _remove(temporary)
        raise
    _remove(temporary)
    return False


def _remove(path: str) -> None:
    """Delete ``path`` if it is there, best effort (the next open removes a temporary file anyway)."""
    with contextlib.suppress(OSError):
        fs.unlink(path)


def take(directory: str, size: int, destination: str) -> bool:
    """Rename the standby to ``destination`` if it is ready for a segment of ``size`` bytes; False if
    there is none (one that is not ready is deleted)."""
    path = standby_path(directory)
    if not _ready(path, size):
        return False
    fs.replace(path, destination)
    return True


def _ready(path: str, size: int) -> bool:
    """Whether the standby at ``path`` has ``size`` bytes and no other name; one that has not is deleted.

    Another name is a segment: a power cut can keep a roll's link of the renamed standby to the
    segment's name and lose the rename itself. Taking that file again would overwrite the segment.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return False
    if status.st_size == size and status.st_nlink == 1:
        return True
    _remove(path)  # removing this name leaves a segment that shares the file intact
    return False


class StandbyPreparer:
    """Prepares the standby of ``size`` bytes in a background thread, one preparation at a time.

    The writer starts it when the active segment is half full and waits for it before a roll
    and before it releases the bus (so that no thread writes in a bus it no longer holds).
    """

    def __init__(self, directory: str, size: int) -> None:
        self.directory = directory
        self.size = size
        #: The error that cut the last preparation short, if any (it cost only speed).
        self.failure: BaseException | None = None
        #: Set by the thread when the preparation in progress has finished; None when none is.
        self._done: threading.Event | None = None

    def start(self) -> None:
        """Start preparing, unless a standby is ready or being prepared, or the disk is nearly full
        (the appends then keep the space; the roll zero-fills what it can)."""
        try:
            if self._done is not None or _ready(standby_path(self.directory), self.size):
                return
            disk = os.statvfs(self.directory)
        except OSError as exc:
            if not fs.failed_call(exc):
                raise
            return  # a speed-up only: never a reason for an append to fail
        if disk.f_bavail * disk.f_frsize < RESERVE_FACTOR * self.size:
            return
        self.failure = None
        done, adopted = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=self._run, args=(done, adopted), name="filelog-bus standby", daemon=True
        )
        try:
            thread.start()
        except Exception as exc:  # no thread to be had (a limit reached): only speed is lost
            self.failure = exc
            return
        # An interrupt landing from here on leaves a thread that either is waited for, or gives up
        # without writing anything (not adopted), but never one that writes unwatched or that
        # nobody ever wakes.
        self._done = done
        adopted.set()

    def _run(self, done: threading.Event, adopted: threading.Event) -> None:
        try:
            if adopted.wait(_ADOPTION_SECONDS):
                prepare(self.directory, self.size)
        except BaseException as exc:  # only speed is lost: the roll zero-fills inline
            self.failure = exc
        finally:
            done.set()

    def wait(self) -> None:
        """Wait until the preparation in progress, if any, has finished, even if interrupted (the
        interrupt is raised once it has): no thread may go on writing in a bus whose writer let go.

        (Not Thread.join(): a join interrupted by a signal handler's exception marks the thread as
        stopped while it still runs.)
        """
        done = self._done
        if done is None:
            return
        interrupted: BaseException | None = None
        while not done.is_set():
            try:
                done.wait()
            except BaseException as exc:  # KeyboardInterrupt, or what a signal handler raised
                interrupted = interrupted or exc
        self._done = None
        if interrupted is not None:
            raise interrupted
