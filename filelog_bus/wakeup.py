"""Waking waiting readers when the watermark moves: a futex on the watermark file's page.

A reader that has caught up sleeps in ``FUTEX_WAIT`` on the low 32 bits of the published offset,
through a read-only shared mapping of the watermark file, and the writer calls ``FUTEX_WAKE`` on
the same word after publishing. A futex on a shared file mapping is keyed by the file's page, so
waits and wakes meet across processes whatever mapping each uses, and whether the offset was
stored through a mapping or written with ``pwrite``. The reader writes nothing and creates
nothing (a read-only mount is fine), the kernel compares the word with what the reader last read
before it sleeps (no lost wake-up between the check and the sleep), and the reader never touches
the mapping itself (a truncated file makes the wait fail with EFAULT, never a SIGBUS).

Wakes are coalesced, so that a ``durability="never"`` writer pays a clock read per append and one
system call per ``RING_INTERVAL``: a publication is left unrung only within ``RING_INTERVAL`` of
a rung one, and a reader that has seen the watermark move sleeps at most ``ACTIVE_WINDOW``
(>= RING_INTERVAL) until the watermark has stood still that long; see docs/WAKEUP.md for the
proof. Otherwise a reader re-checks every ``RECHECK_SECONDS`` (a writer killed between its store
and its wake, an older writer that never wakes), and falls back to sleep-polling, saying so once
in the log, where the mechanism is missing (not Linux, no mapping) or stays silent.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import platform
import sys
import time

from filelog_bus.layout import FILE_HEADER_SIZE

#: The writer wakes readers at most once per this many seconds.
RING_INTERVAL = 0.001
#: After the watermark moved, a reader sleeps at most this long, until it stands still this long.
ACTIVE_WINDOW = 2 * RING_INTERVAL
#: A reader whose watermark stands still re-checks it this often anyway.
RECHECK_SECONDS = 0.25
#: Changes a reader found only by re-checking, one after another, before it falls back to polling.
SILENT_CHANGES_TO_FALL_BACK = 3

#: The futex word: the low 32 bits of the published offset (the watermark slot is little-endian).
_WORD_POSITION = FILE_HEADER_SIZE
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_WAKE_ALL = 0x7FFFFFFF
#: A wait that ended without a wake: the word had changed already, the timeout, a signal.
_NOT_WOKEN = (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR)
_SYS_FUTEX = {
    "x86_64": 202,
    "amd64": 202,
    "aarch64": 98,
    "arm64": 98,
    "riscv64": 98,
    "ppc64le": 221,
    "ppc64": 221,
    "s390x": 238,
    "i686": 240,
    "i386": 240,
    "armv7l": 240,
}
_monotonic = time.monotonic
_log = logging.getLogger("filelog_bus.wakeup")
_told: set[str] = set()


def _say_once(what: str) -> None:
    if what not in _told:
        _told.add(what)
        _log.warning("filelog-bus readers %s: waiting readers poll the watermark instead", what)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Futex:
    """The three libc calls used: syscall(SYS_futex), mmap, munmap."""

    def __init__(self, number: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.number = ctypes.c_long(number)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        )
        self.munmap = libc.munmap
        self.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


_binding: _Futex | None = None
_missing: str | None = None


def _futex() -> _Futex | None:
    """The futex binding, or None (and why, in ``_missing``) where this system has none."""
    global _binding, _missing
    if _binding is None and _missing is None:
        number = _SYS_FUTEX.get(platform.machine().lower()) if sys.platform == "linux" else None
        if number is None:
            _missing = f"have no futex on this system ({sys.platform} {platform.machine()})"
        else:
            try:
                _binding = _Futex(number)
            except (OSError, AttributeError) as exc:
                _missing = f"cannot call the futex system call ({exc})"
    return _binding


def futex_word(offset: int) -> int:
    """The futex word for a published offset: its low 32 bits as the kernel reads them."""
    return int.from_bytes((offset & 0xFFFFFFFF).to_bytes(4, "little"), sys.byteorder)


class _MappedWord:
    """A read-only shared mapping of the watermark file's first page, and the futex word in it.

    Mapped through libc, not Python's mmap: Python code never reads it (a read through a mapping
    of a truncated file is a SIGBUS); only the kernel does, in the futex calls.
    """

    def __init__(self, futex: _Futex, fd: int) -> None:
        self._futex = futex
        address = futex.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "mmap of the watermark file failed")
        self._page: int | None = address
        self._word = ctypes.c_void_p(address + _WORD_POSITION)

    def wake(self) -> None:
        """Wake every process waiting on the word (a failure only means nobody is woken)."""
        self._futex.syscall(self._futex.number, self._word, _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

    def wait(self, expected: int, seconds: float) -> bool:
        """Sleep while the word holds ``expected``, up to ``seconds``; True if a wake ended the sleep.

        OSError when the kernel refuses the wait (EFAULT: the file was truncated under the mapping).
        """
        whole = int(seconds)
        timeout = _Timespec(whole, int((seconds - whole) * 1e9))
        result = self._futex.syscall(
            self._futex.number,
            self._word,
            _FUTEX_WAIT,
            ctypes.c_uint32(expected),
            ctypes.byref(timeout),
            None,
            0,
        )
        if result == 0:
            return True
        error = ctypes.get_errno()
        if error in _NOT_WOKEN:
            return False
        raise OSError(error, os.strerror(error))

    def close(self) -> None:
        page, self._page = self._page, None
        if page is not None:
            self._futex.munmap(page, mmap.PAGESIZE)


def _map_word(fd: int) -> _MappedWord | None:
    futex = _futex()
    if futex is None:
        assert _missing is not None
        _say_once(_missing)
        return None
    try:
        return _MappedWord(futex, fd)
    except OSError as exc:
        _say_once(f"cannot map the watermark file ({exc.strerror or exc})")
        return None


class Waker:
    """Writer side: after each publication, wake the waiting readers, at most once per RING_INTERVAL.

    A publication goes unrung only when its store came before ``rung_after + RING_INTERVAL``,
    ``rung_after`` being the clock read after the publication before the last rung one (so,
    before that one's store): a reader that saw the rung one's offset re-checks long enough to
    see it (``Waiter.pause``). One clock read per publication: ``durability="never"`` appends
    take under 3 microseconds.
    """

    @classmethod
    def open(cls, fd: int) -> Waker | None:
        """A waker for the watermark file open as ``fd``; None where the mechanism is missing."""
        word = _map_word(fd)
        return None if word is None else cls(word)

    def __init__(self, word: _MappedWord) -> None:
        self._word = word
        self._previous = float("-inf")
        self._rung_after = float("-inf")

    def published(self) -> None:
        """Call after every store of the watermark, with nothing in between."""
        now = _monotonic()
        if now - self._rung_after >= RING_INTERVAL:
            self._rung_after = self._previous
            self._word.wake()
        self._previous = now

    def close(self) -> None:
        self._word.close()


class Waiter:
    """Reader side: sleep until the watermark may have moved, or a bound (see ``pause``)."""

    def __init__(self, fd: int, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._word = _map_word(fd)
        self._seen: int | None = None
        self._moved_at = float("-inf")
        self._slept_idle = False
        #: Changes found only by an idle re-check, in a row (a wake that never came), and in all.
        self._silent_in_a_row = 0
        self.silent_changes = 0

    @property
    def polling(self) -> bool:
        """Whether this waiter sleep-polls (the mechanism is missing, or stayed silent)."""
        return self._word is None

    def pause(self, offset: int, limit: float | None) -> None:
        """Sleep while the published offset is ``offset`` (what the caller just read), up to ``limit``
        seconds and the re-check bounds. The caller reads the watermark again after every pause."""
        now = time.monotonic()
        if offset != self._seen:
            if self._seen is not None and self._slept_idle:
                self._silent()
            elif self._seen is not None:
                self._silent_in_a_row = 0
            self._seen = offset
            self._moved_at = now
        word = self._word
        if word is None:
            time.sleep(self.poll_interval if limit is None else min(self.poll_interval, limit))
            return
        active_for = self._moved_at + ACTIVE_WINDOW - now
        bound = active_for if active_for > 0 else RECHECK_SECONDS
        seconds = bound if limit is None else min(limit, bound)
        try:
            woken = word.wait(futex_word(offset), seconds)
        except OSError as exc:
            _say_once(f"cannot wait on the watermark file ({exc.strerror})")
            self.close()
            time.sleep(min(self.poll_interval, seconds))
            return
        self._slept_idle = not woken and active_for <= 0 and seconds == bound

    def _silent(self) -> None:
        """The watermark moved without a wake: once is a writer killed before waking; a few in a row,
        a writer that does not wake (an older version) or a mapping that never sees its store."""
        self.silent_changes += 1
        self._silent_in_a_row += 1
        if self._silent_in_a_row >= SILENT_CHANGES_TO_FALL_BACK and self._word is not None:
            _say_once("are not woken when the watermark moves (an older writer?)")
            self._word.close()
            self._word = None

    def close(self) -> None:
        word, self._word = self._word, None
        if word is not None:
            word.close()
