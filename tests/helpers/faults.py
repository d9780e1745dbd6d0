"""Fault injection through the engine's I/O seam (filelog_bus.fs), SQLite test-VFS style.

``injected(Fault("fsync", 3, errno.EIO))`` makes the third ``fs.fsync`` call inside the
block fail with EIO; ``Fault("any", 7, KeyboardInterrupt)`` raises KeyboardInterrupt (as a
signal handler would) instead of making the seventh seam call of any kind. ``count_calls``
runs a workload and counts its seam calls, so a sweep can fail each one in turn.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from filelog_bus import fs
from filelog_bus.layout import FILE_HEADER_SIZE, WATERMARK_NAME

#: The seam calls a sweep fails, and the errors it fails them with.
SWEPT_CALLS = tuple(name for name in fs.SEAM if name != "close")  # a failed close loses nothing
SWEPT_ERRORS = (errno.ENOSPC, errno.EIO, errno.EMFILE)


class Interrupt(BaseException):
    """What a signal handler raises in the middle of an operation (a BaseException, like Ctrl-C)."""


class Fault(NamedTuple):
    #: A name of fs.SEAM, or "any" to count every seam call.
    call: str
    #: Which call fails, counting from 1.
    nth: int
    #: An errno for an OSError, or an exception class to raise.
    error: int | type[BaseException]

    def raise_it(self, name: str) -> None:
        if isinstance(self.error, int):
            raise OSError(self.error, f"injected {os.strerror(self.error)} in fs.{name}")
        raise self.error(f"injected in fs.{name}")


@dataclass
class FaultLog:
    counts: Counter[str] = field(default_factory=Counter)
    total: int = 0
    fired: bool = False
    #: The seam call that failed, e.g. "fsync".
    fired_at: str | None = None
    #: Whether that call was a write of zeros only (preallocation, which a full disk may refuse).
    fired_on_zeros: bool = False


#: wrap(seam call name, the real function) -> the function installed in its place.
Wrapper = Callable[[str, Callable[..., Any]], Callable[..., Any]]


@contextmanager
def seam_wrapped(wrap: Wrapper) -> Iterator[None]:
    """Within the block, every seam call goes through ``wrap(name, original)``; restored after."""
    originals = {name: getattr(fs, name) for name in fs.SEAM}
    for name, original in originals.items():
        setattr(fs, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(fs, name, original)


@contextmanager
def injected(fault: Fault | None) -> Iterator[FaultLog]:
    """Within the block, make the fault's call fail (None: only count the calls)."""
    log = FaultLog()

    def wrap(name: str, original: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            log.counts[name] += 1
            log.total += 1
            if fault is not None and not log.fired:
                number = log.total if fault.call == "any" else log.counts[name]
                if (fault.call in ("any", name)) and number == fault.nth:
                    log.fired = True
                    log.fired_at = name
                    log.fired_on_zeros = name == "write_zeros"
                    fault.raise_it(name)
            return original(*args, **kwargs)

        return call

    with seam_wrapped(wrap):
        yield log


@contextmanager
def raised_after(
    call: str, error: type[BaseException] = Interrupt, matching: Callable[..., bool] = lambda *_: True
) -> Iterator[list[int]]:
    """Within the block, the next ``fs.<call>`` whose arguments are ``matching`` is made, then ``error``
    is raised, as a signal handler's exception landing right after it; yields a list that gets 1 when
    it fired."""
    fired: list[int] = []

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        if name != call:
            return original

        def call_then_raise(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if not fired and matching(*args, **kwargs):
                fired.append(1)
                raise error(f"landed after fs.{name}")
            return result

        return call_then_raise

    with seam_wrapped(wrap):
        yield fired


def publishes_the_watermark(fd: int, data: bytes, position: int) -> bool:
    """Whether a ``pwrite`` is the watermark's publication (its slot after the file header)."""
    return os.readlink(f"/proc/self/fd/{fd}").endswith(f"/{WATERMARK_NAME}") and position == FILE_HEADER_SIZE


def count_calls(workload: Callable[[], object]) -> Counter[str]:
    """The seam calls ``workload()`` makes, by name (and "any" for all of them)."""
    with injected(None) as log:
        workload()
    counts = Counter(log.counts)
    counts["any"] = log.total
    return counts


def same_failure(failure: BaseException | None, raised: BaseException) -> bool:
    """Whether a stopped writer's ``failure`` is the error a call raised (or its cause)."""
    return failure is not None and (
        failure is raised
        or failure is raised.__cause__
        or failure is raised.__context__
        or raised is failure.__cause__
        or raised is failure.__context__
    )


# -- seam faults chosen by the file they hit ------------------------------------------------------

#: decide(call name, path of the file or directory it acts on or None, args) -> errno to fail with, or None.
Decide = Callable[[str, "str | None", tuple[Any, ...]], "int | None"]


@contextmanager
def path_faults(decide: Decide) -> Iterator[list[tuple[str, str | None]]]:
    """Fail the first seam call for which ``decide`` names an errno; yield the list of fired faults.

    It tracks which path each file descriptor opened inside the block refers to, so a fault
    can target "a write to the .catindex file" or "the fsync of the bus directory".
    """
    fired: list[tuple[str, str | None]] = []
    paths: dict[int, str] = {}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("open", "unlink", "mkdir"):
                path: str | None = os.fspath(args[0])
            elif name in ("link", "replace"):
                path = os.fspath(args[1])
            else:
                path = paths.get(args[0])
            if not fired:
                error = decide(name, path, args)
                if error is not None:
                    fired.append((name, path))
                    raise OSError(error, f"injected {os.strerror(error)} in fs.{name}", path)
            result = original(*args, **kwargs)
            if name == "open":
                paths[result] = os.fspath(args[0])
            elif name == "close":
                paths.pop(args[0], None)
            return result

        return call

    with seam_wrapped(wrap):
        yield fired


def is_directory(path: str | None, directory: Path) -> bool:
    return path is not None and os.path.isdir(path) and os.path.samefile(path, directory)


def fill_disk(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    with open(path, "ab", buffering=0) as file:
        chunk = bytes(4096)
        try:
            while True:
                file.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
