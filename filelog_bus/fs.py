"""The file-system calls the engine makes, in one place: the engine's I/O seam.

Every call that changes a bus's files (and every ``open``) goes through this
module as ``fs.NAME(...)``, looked up at call time. That costs nothing over
calling ``os`` directly, and lets the test suite replace any of them, as
SQLite's test VFS does, to fail the Nth call with ENOSPC, EIO or EMFILE, raise
an exception as a signal handler would, or record the calls of a workload to
build the states a power cut could leave (see tests/helpers/faults.py).

Reads that change nothing (``pread``, ``fstat``, ``listdir``) call ``os``
directly.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Protocol, TypeGuard

from filelog_bus.os_errors import READ_PERMISSION_ADVICE, permission_error


class Closable(Protocol):
    def close(self) -> None: ...


#: The names the test suite may replace. Each is a plain function with os's signature.
SEAM = (
    "open",
    "close",
    "write",
    "pwrite",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "link",
    "replace",
    "unlink",
    "mkdir",
    "write_zeros",
)


def open(path: str, flags: int, mode: int = 0o666) -> int:
    return os.open(path, flags | os.O_CLOEXEC, mode)


close = os.close
write = os.write
pwrite = os.pwrite
fsync = os.fsync
fdatasync = os.fdatasync
ftruncate = os.ftruncate
fallocate = os.posix_fallocate
link = os.link
replace = os.replace
unlink = os.unlink
mkdir = os.mkdir


def failed_call(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is a system call's failure: an OSError with an errno. An OSError without
    one (a TimeoutError a signal handler raised in the middle) is not, and a step that shrugs
    off failed calls (a best-effort read, a close) must let it through, as an interrupt."""
    return isinstance(exc, OSError) and exc.errno is not None


#: The fallback of ``write_zeros`` writes this much at a time (see there).
ZERO_CHUNK = 64 * 1024
_ZEROS = memoryview(bytes(ZERO_CHUNK))


def write_zeros(fd: int, length: int, position: int) -> int:
    """Write up to ``length`` zero bytes at ``position`` (moving the file position); return how many.

    One ``sendfile`` from /dev/zero, which writes them with the interpreter's lock released
    throughout: a Python loop of pwrites must win the lock back between writes, 1,024 times
    for a 64 MiB standby, and slowed the thread appending meanwhile (benchmarks/RESULTS.md,
    "Durable sends with a hermes-server's per-event work"). The kernel copies at most a pipe's
    64 KiB per write, so the file stays in small page-cache folios: appends into it sync as fast
    as into zeros pwritten 64 KiB at a time (after 1 MiB writes or pwritevs, slower: RESULTS.md,
    "Against the targets"). Where sendfile fails (refused for this file, or by a seccomp
    policy; a full disk then fails the pwrite too), or /dev/zero cannot be opened, a pwrite
    of at most ``ZERO_CHUNK`` bytes.
    """
    written = _sendfile_zeros(fd, length, position)
    if written > 0:
        return written
    return os.pwrite(fd, _ZEROS[: min(length, ZERO_CHUNK)], position)


def _sendfile_zeros(fd: int, length: int, position: int) -> int:
    """``write_zeros``'s sendfile; 0 where it cannot be done.

    /dev/zero is opened as a file object, not a bare descriptor: should a signal handler raise
    between the open and the ``with``, dropping the object closes it, where a descriptor would
    leak. What a handler raises reaches the caller (``failed_call``).
    """
    try:
        with io.FileIO("/dev/zero", "r") as source:
            os.lseek(fd, position, os.SEEK_SET)
            return os.sendfile(fd, source.fileno(), None, length)
    except OSError as exc:
        if not failed_call(exc):
            raise
        return 0


def close_all(*parts: Closable | None) -> None:
    """Close every part, even when closing one fails or is interrupted.

    A failed close is ignored (the data was synced before, or the caller is already failing);
    any other exception (an interrupt, or an OSError without an errno: what a signal handler
    raised) is raised once every part was closed.
    """
    interrupted: BaseException | None = None
    for part in parts:
        if part is None:
            continue
        try:
            part.close()
        except BaseException as exc:
            if not failed_call(exc):
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` at the file position (a short write is continued)."""
    view = memoryview(data)
    while view:
        view = view[write(fd, view) :]


def pwrite_all(fd: int, data: bytes | memoryview, position: int) -> None:
    """Write every byte of ``data`` at ``position`` (a short write is continued)."""
    written = pwrite(fd, data, position)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    position += written
    while view:
        written = pwrite(fd, view, position)
        view = view[written:]
        position += written


def fsync_directory(path: str) -> None:
    """Make a file creation, rename or deletion in ``path`` durable."""
    fd = open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        close(fd)


def read_file(path: str) -> bytes:
    """The whole content of a (small) file. FileNotFoundError if it is missing."""
    fd = open(path, os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        close(fd)


def write_file_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` by a file holding ``data``: readers see the old file or the new one.

    The new file's bytes are fsync'd before the rename; the caller fsyncs the directory
    (once for several files).
    """
    temporary = path + ".new"  # layout.TEMPORARY_SUFFIX (fs depends on no bus layout)
    fd = open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
        fsync(fd)
    finally:
        close(fd)
    replace(temporary, path)


def open_or_explain(path: str, flags: int, mode: int = 0o666) -> int:
    """fs.open that turns a permission problem into a BusPermissionError saying what to do."""
    try:
        return open(path, flags, mode)
    except PermissionError as exc:
        access = "write" if flags & (os.O_WRONLY | os.O_RDWR) else "read"
        raise permission_error(
            exc,
            f"permission denied opening {path} to {access} it",
            path=path,
            advice=f"run as a user that may {access} the bus directory's files (see docs/RELIABILITY.md, 'Permissions')",
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
        raise permission_error(
            exc, f"permission denied looking at {path} to {purpose}", path=path, advice=READ_PERMISSION_ADVICE
        ) from None


def replace_outside_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace a file that is not part of a bus (a Hermes plugin file, a metrics textfile) in one
    step, so that nobody reads half of it: written under a unique temporary name beside it, made
    readable by all (0644), then renamed over it. Not through the seam, and not fsync'd: such a
    file is simply written again if a crash loses it."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
