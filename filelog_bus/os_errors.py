"""From a failed system call (an ``OSError``) to the typed error a user gets, in one place.

The engine and the Hermes plugins translate here, so that one failure reads the same and
carries the same advice wherever it happens: ``io_error`` for a failed read or write (the
advice table says what to do about each errno), ``permission_error`` for a file the user may
not open, look at or create, and ``restated`` for a permission error re-worded for the user of
a plugin. What did not come from a failed call (an interrupt; an OSError without an errno,
which a signal handler raised) is never translated: see ``fs.failed_call``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from filelog_bus.errors import BusIOError, BusPermissionError, FilelogBusError

#: What a user who may not look into a bus needs (the inspecting commands, a reader, a writer's open).
READ_PERMISSION_ADVICE = (
    "the user running this process needs search (x) permission on every directory above the bus and "
    "read and search (r-x) permission on the bus directory (see docs/RELIABILITY.md, 'Permissions')"
)


def advice(error_number: int, then: str = "open the writer again") -> str:
    """What to do about a failed call with this errno; ``then`` is the step that follows the fix."""
    if error_number in (errno.ENOSPC, errno.EDQUOT):
        return f"free disk space (or apply retention), then {then}"
    if error_number == errno.EFBIG:
        return "the file-size limit (ulimit -f) was reached: raise it or lower segment_bytes"
    if error_number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the bus directory's permissions and that its file system is writable"
    if error_number in (errno.EMFILE, errno.ENFILE):
        return f"the process has too many open files: raise its limit (ulimit -n), then {then}"
    return f"check the disk and the system log, then {then}"


def io_error(
    exc: OSError,
    failed: str,
    path: str,
    *,
    error_type: type[BusIOError] = BusIOError,
    offset: int | None = None,
    advice_prefix: str = "",
    then: str = "open the writer again",
) -> FilelogBusError:
    """``error_type`` (BusIOError, or BusWriteError for a write) for a failed call: ``failed: strerror``,
    the file the call names (else ``path``), and the advice table's words (after ``advice_prefix``).

    A typed error already (the engine explained it where it happened) is kept as it is.
    """
    if isinstance(exc, FilelogBusError):
        return exc
    error_number = exc.errno or errno.EIO
    return error_type(
        f"{failed}: {os.strerror(error_number)}",
        path=exc.filename or path,
        offset=offset,
        advice=advice_prefix + advice(error_number, then),
        errno=error_number,
    )


def permission_error(exc: OSError, reason: str, *, path: str, advice: str) -> BusPermissionError:
    """A BusPermissionError for a call the system refused: ``reason``, the file or directory refused,
    and what the user needs."""
    return BusPermissionError(reason, path=path, advice=advice, errno=exc.errno or errno.EACCES)


def restated(exc: PermissionError, reason: str, *, path: str, advice: str) -> BusPermissionError:
    """A permission error re-worded for another audience (a Hermes admin): ``reason (what failed)``,
    the file refused (else ``path``), and that audience's ``advice``."""
    detail = exc.reason if isinstance(exc, FilelogBusError) else str(exc)
    refused = (exc.path if isinstance(exc, FilelogBusError) else None) or exc.filename or path
    return permission_error(exc, f"{reason} ({detail})", path=refused, advice=advice)


@contextmanager
def failures_explained(path: str, purpose: str) -> Iterator[None]:
    """For the inspecting reads (stats, verify, retention's planning): a bare PermissionError
    (listing the bus directory, looking at a file in it) becomes a BusPermissionError that says
    what the user needs, as the reader's do; any other failed call (EMFILE, ELOOP, EISDIR...) a
    BusIOError naming the file, with the advice table's words. An OSError without an errno (an
    interrupt a signal handler raised) passes through, as everywhere (``fs.failed_call``)."""
    try:
        yield
    except PermissionError as exc:
        if isinstance(exc, FilelogBusError):
            raise
        where = os.fsdecode(exc.filename) if exc.filename else path
        raise permission_error(
            exc, f"permission denied reading {where} to {purpose}", path=where, advice=READ_PERMISSION_ADVICE
        ) from None
    except OSError as exc:
        if isinstance(exc, FilelogBusError) or exc.errno is None:
            raise
        where = os.fsdecode(exc.filename) if exc.filename else path
        raise io_error(exc, f"could not read {where} to {purpose}", path, then="run it again") from exc
