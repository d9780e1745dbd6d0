"""Waking waiting readers when the watermark moves: a futex on the watermark file's page.

A reader that has caught up sleeps in ``FUTEX_WAIT`` on the low 32 bits of the published offset,
through a read-only shared mapping of the watermark file, and the writer calls ``FUTEX_WAKE`` on
the same word after publishing. A futex on a shared file mapping is keyed by the file's page, so
waits and wakes meet across processes whatever mapping each uses, and whether the offset was
stored through a mapping or written with ``pwrite``. The reader writes nothing and creates
nothing (a read-only mount is fine), the kernel compares the word with what the reader last read
before it sleeps (no lost wake-up between the check and the sleep), and the reader never touches
the mapping itself (a truncated file makes the wait fail with EFAULT, never a SIGBUS).

Wake-ups are coalesced (``Waker``): the first publication after a quiet interval wakes the
readers at once; those that follow within the interval set a flag, and a ringer thread wakes
the readers once per interval while it is set, so every publication is followed by a wake-up
within one interval and a ``durability="never"`` append pays a flag store and a test. The
interval adapts to how many readers the last wake-up found waiting. A reader re-checks every
``RECHECK_SECONDS`` anyway (a writer killed between its store and its wake-up, an older
writer that never wakes), and falls back to sleep-polling, saying so once in the log, where the
mechanism is missing (not Linux, no mapping) or stays silent. Design and measurements:
docs/WAKEUP.md.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import platform
import sys
import threading
import time
import weakref

from filelog_bus.layout import FILE_HEADER_SIZE

#: While it publishes without pause, the writer wakes readers at most once per RING_INTERVAL;
#: with ``n`` readers woken last time, once per ``SECONDS_FOR_ONE_READER + (n - 1) *
#: SECONDS_PER_MORE_READER``, up to MAX_RING_INTERVAL (a wake-up costs each reader a Python turn
#: of CPU, and the writer's durable appends need a core: the more readers, the fewer turns each may
#: take; what tailing readers cost a durable writer with these intervals: benchmarks/RESULTS.md,
#: "A durable writer with K tailing reader processes");
#: with none, twice as long as last time, up to NOBODY_RING_INTERVAL (how long a reader that
#: starts waiting in the middle of such a stream may wait for its first wake-up).
RING_INTERVAL = 0.001
SECONDS_FOR_ONE_READER = 0.002
SECONDS_PER_MORE_READER = 0.005
MAX_RING_INTERVAL = 0.4
NOBODY_RING_INTERVAL = 0.05
#: A reader whose watermark stands still re-checks it this often anyway.
RECHECK_SECONDS = 0.8
#: Changes a reader found only by re-checking, one after another, before it falls back to polling.
SILENT_CHANGES_TO_FALL_BACK = 3
#: An idle ringer thread checks this often whether its writer was dropped without close().
_RINGER_IDLE_SECONDS = 60.0

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


def _futex_word(offset: int) -> int:
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

    def wake(self) -> int:
        """Wake every process waiting on the word; how many there were (a failure: none)."""
        return max(
            0, self._futex.syscall(self._futex.number, self._word, _FUTEX_WAKE, _WAKE_ALL, None, None, 0)
        )

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
    """Writer side: wake the waiting readers after publications, coalesced.

    The first publication after a quiet interval wakes them at once, in ``published``; the
    ones that follow within the interval only set a flag, and a ringer thread wakes the readers
    once per interval while that flag is set, then goes idle. Every publication is so followed
    by a wake-up within one interval, whatever comes after it, and a ``durability="never"``
    append pays a flag store and a test for it.
    """

    @classmethod
    def open(cls, fd: int) -> Waker | None:
        """A waker for the watermark file open as ``fd``; None where the mechanism is missing."""
        word = _map_word(fd)
        return None if word is None else cls(word)

    def __init__(self, word: _MappedWord) -> None:
        self._word = word
        #: A publication is waiting for the ringer's next wake-up.
        self._pending = False
        #: The ringer thread is idle (or not started): the next publication wakes the readers itself.
        self._idle = True
        self._interval = RING_INTERVAL
        self._kick = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def published(self) -> None:
        """Call after every store of the watermark (pending first, then idle: see ``_ringer``)."""
        self._pending = True
        if self._idle:
            self._wake_now()

    def _wake_now(self) -> None:
        self._idle = False
        kicked = False
        try:
            self._pending = False
            self._ring(self._word.wake())
            if self._thread is None:
                thread = threading.Thread(
                    target=_ringer, args=(weakref.ref(self),), name="filelog-bus waker", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (a limit on threads or processes)
                    return  # idle again (below): every publication wakes the readers itself, uncoalesced
                self._thread = thread
            self._kick.set()
            kicked = True
        finally:
            if not kicked:  # (also an interrupt landing here) the ringer may sleep unkicked: stay idle, so
                self._idle = True  # that the next publication wakes the readers and kicks it itself

    def _ring(self, woken: int) -> None:
        """Adapt the interval to the readers the last wake-up found waiting: longer with many
        (each wake-up costs each of them a turn), doubling while none waits (a writer nobody
        follows then hardly pays for the thread)."""
        if woken:
            interval = SECONDS_FOR_ONE_READER + (woken - 1) * SECONDS_PER_MORE_READER
            self._interval = min(max(interval, RING_INTERVAL), MAX_RING_INTERVAL)
        else:
            self._interval = min(2 * self._interval, NOBODY_RING_INTERVAL)

    def close(self) -> None:
        """Stop the ringer, wake the readers for a last pending publication, unmap."""
        self._closed = True
        self._kick.set()
        thread, self._thread = self._thread, None
        try:
            if thread is not None and thread is not threading.current_thread():
                thread.join(1.0)
        finally:
            if self._pending:
                self._pending = False
                self._word.wake()
            self._word.close()


def _ringer(ref: weakref.ref[Waker]) -> None:
    """The ringer thread: wait to be kicked, then wake the readers once per interval while
    publications come, and go idle after an interval without one.

    Going idle writes ``_idle`` then reads ``_pending``, where ``published`` writes ``_pending``
    then reads ``_idle`` (sequentially consistent under the interpreter lock): either the
    publication sees the ringer idle and wakes the readers itself, or the ringer sees it pending.
    """
    while True:
        waker = ref()
        if waker is None or waker._closed:
            return
        kick = waker._kick
        del waker
        kick.wait(_RINGER_IDLE_SECONDS)
        kick.clear()
        while True:
            waker = ref()
            if waker is None or waker._closed:
                return
            interval = waker._interval
            del waker
            kick.wait(interval)  # set by close() (or by a publication that raced the going idle)
            waker = ref()
            if waker is None or waker._closed:
                return
            if waker._pending:
                waker._pending = False
                waker._ring(waker._word.wake())
                del waker
                continue
            waker._idle = True
            if not waker._pending:
                break
            waker._idle = False  # published meanwhile and saw the ringer busy: ring it next turn
            del waker


class Waiter:
    """Reader side: sleep until the watermark may have moved, or a bound (see ``pause``)."""

    def __init__(self, fd: int, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._word = _map_word(fd)
        self._seen: int | None = None
        self._slept_idle = False
        #: Changes found only by an idle re-check, in a row (a wake-up that never came).
        self._silent_in_a_row = 0

    @property
    def polling(self) -> bool:
        """Whether this waiter sleep-polls (the mechanism is missing, or stayed silent)."""
        return self._word is None

    def pause(self, offset: int, limit: float | None) -> None:
        """Sleep while the published offset is ``offset`` (what the caller just read), up to ``limit``
        seconds and the re-check bounds. The caller reads the watermark again after every pause."""
        if offset != self._seen:
            if self._seen is not None and self._slept_idle:
                self._silent()
            elif self._seen is not None:
                self._silent_in_a_row = 0
            self._seen = offset
        word = self._word
        if word is None:
            time.sleep(self.poll_interval if limit is None else min(self.poll_interval, limit))
            return
        seconds = RECHECK_SECONDS if limit is None else min(limit, RECHECK_SECONDS)
        try:
            woken = word.wait(_futex_word(offset), seconds)
        except OSError as exc:
            _say_once(f"cannot wait on the watermark file ({exc.strerror})")
            self.close()
            time.sleep(min(self.poll_interval, seconds))
            return
        self._slept_idle = not woken and seconds == RECHECK_SECONDS

    def _silent(self) -> None:
        """The watermark moved without a wake: once is a writer killed before waking; a few in a row,
        a writer that does not wake (an older version) or a mapping that never sees its store."""
        self._silent_in_a_row += 1
        if self._silent_in_a_row >= SILENT_CHANGES_TO_FALL_BACK and self._word is not None:
            _say_once("are not woken when the watermark moves (an older writer?)")
            self._word.close()
            self._word = None

    def close(self) -> None:
        word, self._word = self._word, None
        if word is not None:
            word.close()
