"""The standby: the next segment's file, zero-filled ahead of the roll (filelog_bus/standby.py).

Real files, a real background thread, real SIGKILLs and faults injected at the I/O seam by the
file they hit: the standby appears once the active segment is half full, a roll takes that very
file, and nothing that goes wrong with it (a failing disk, a kill in the middle, a leftover of
another size) costs a record or stops the writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from helpers.bus import read_all
from helpers.faults import Interrupt, path_faults, seam_wrapped
from helpers.processes import run_python, spawn_python

from filelog_bus import LogWriter, fs
from filelog_bus.bus_directory import bus_state
from filelog_bus.check import verify_bus
from filelog_bus.fs import ZERO_CHUNK
from filelog_bus.layout import STANDBY_NAME, TEMPORARY_SUFFIX, segment_name
from filelog_bus.record import encode_record
from filelog_bus.segment import list_segment_bases, preallocated_size
from filelog_bus.standby import BACKGROUND_BYTES, fill_zeros

#: The smallest segments whose standby is prepared in the background.
SEGMENT = BACKGROUND_BYTES
PAYLOAD = bytes(range(256)) * 4  # 1 KiB, no zero bytes at the start


def standby(bus: Path) -> Path:
    return bus / STANDBY_NAME


def leftovers(bus: Path) -> list[str]:
    return sorted(name for name in os.listdir(bus) if name.endswith(TEMPORARY_SUFFIX))


def only_zeros(path: Path) -> bool:
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    return True


def wait_for(condition: object, what: str, seconds: float = 60.0) -> None:
    """Wait for a background thread's work to show on disk (not a timing assertion: a deadline)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.01)


def fill_to(writer: LogWriter, base: int, fraction: float) -> list[int]:
    """Append 1 KiB records until the active segment (at ``base``) is ``fraction`` full."""
    offsets = []
    while writer.end_offset - base < fraction * SEGMENT:
        offsets.append(writer.append("c", PAYLOAD))
    return offsets


def past_the_first_segment(writer: LogWriter) -> tuple[int, list[int]]:
    """Append 1 KiB records until the writer rolled past the bus's first segment, which is small
    (segment_capacity); return the base of the full-size segment it appends to, and the offsets."""
    offsets = []
    while list_segment_bases(writer.path)[-1] == 0:
        offsets.append(writer.append("c", PAYLOAD))
    return list_segment_bases(writer.path)[-1], offsets


def zero_writes(fd: int, start: int, end: int) -> int:
    """Fill [start, end) of ``fd`` with zeros as a segment is filled; return how many writes it took."""
    calls: list[str] = []

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return call

    with seam_wrapped(wrap):
        assert fill_zeros(fd, start, end)
    return calls.count("write_zeros")


def test_zeros_go_over_exactly_the_range_in_one_sendfile(tmp_path: Path) -> None:
    """One write (a sendfile from /dev/zero, with the interpreter's lock released) puts zeros over
    the range and nowhere else, wherever the file position was."""
    path = tmp_path / "file"
    path.write_bytes(b"x" * 300_000)
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, 250_000, os.SEEK_SET)
        assert zero_writes(fd, 1_000, 200_000) == 1
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 1_000 + bytes(199_000) + b"x" * 100_000


def test_zeros_are_pwritten_64_kib_at_a_time_where_sendfile_is_refused(tmp_path: Path) -> None:
    """A file sendfile cannot write to (here: open with O_APPEND, which it refuses with EINVAL)
    gets its zeros by pwrite, 64 KiB at a time."""
    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        zero = os.open("/dev/zero", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as refused:
                os.sendfile(fd, zero, None, 10)
            assert refused.value.errno == errno.EINVAL
        finally:
            os.close(zero)
        assert zero_writes(fd, 0, 200_000) == -(-200_000 // ZERO_CHUNK)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(200_000)


def dev_zero_descriptors() -> list[int]:
    """This process's descriptors open on /dev/zero."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own descriptor is gone by now)
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/zero":
                found.append(int(name))
    return found


# An interrupt between the open of /dev/zero and its `with` leaves the file object to its finaliser,
# which closes it (no descriptor leaks: checked below) and warns that it had to.
# Went wrong: fs.write_zeros leaked /dev/zero descriptors under interrupts, then deadlocked a handler that rolled another bus.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupts_landing_while_zeros_are_written_leak_no_descriptor_and_reach_the_caller(
    tmp_path: Path,
) -> None:
    """A real SIGALRM every 200 µs whose handler raises when it lands inside the zero fill: no
    fill during which it raised returns as if nothing happened, even when it raised an OSError
    such as TimeoutError (not to be taken for sendfile refusing), and no descriptor of
    /dev/zero is left open. (Two landing in one fill raise one exception: the second one
    replaces the first, or, raised in the finaliser of the file object, is only printed.)"""
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    filling = {fill_zeros.__code__, fs.write_zeros.__code__, fs._sendfile_zeros.__code__}
    landed = 0
    interrupted = swallowed = 0

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal landed
        if frame is not None and frame.f_code in filling:
            landed += 1
            raise Interrupt if landed % 2 else TimeoutError

    previous = signal.signal(signal.SIGALRM, on_alarm)
    before = dev_zero_descriptors()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        for _ in range(10_000):
            landed_before = landed
            try:
                fill_zeros(fd, 0, 4096)
            except (Interrupt, TimeoutError):
                interrupted += 1
                continue
            swallowed += landed != landed_before
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(fd)
    assert interrupted > 5, "the interrupts did not land: the test proved nothing"
    assert swallowed == 0
    assert dev_zero_descriptors() == before


# Went wrong: fs.write_zeros leaked /dev/zero descriptors under interrupts, then deadlocked a handler that rolled another bus.
def test_a_signal_handler_that_rolls_another_bus_while_zeros_are_written_does_not_hang(
    tmp_path: Path,
) -> None:
    """A signal handler may append to another bus (an audit log), and that append may roll and
    zero-fill a new segment, while the thread it interrupted is itself writing zeros."""
    result = run_python(
        """
        import os, signal, sys
        from filelog_bus import LogWriter, fs

        audit = LogWriter(sys.argv[1], segment_bytes=64 * 1024, durability="never").open()
        handled = 0

        def on_alarm(signum, frame):
            global handled
            handled += 1
            for _ in range(10):
                audit.append("signal", b"x" * 8000)  # rolls

        signal.signal(signal.SIGALRM, on_alarm)
        fd = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT)
        for n in range(1000):
            target = handled + 1
            signal.setitimer(signal.ITIMER_REAL, 0.00001 + (n % 30) * 0.00001)
            while handled < target:
                fs.write_zeros(fd, 4096, 0)
        audit.close()
        print(handled)
        """,
        str(tmp_path / "audit"),
        str(tmp_path / "file"),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000"]
    assert len(read_all(tmp_path / "audit")) == 10_000


# Went wrong: sendfile refused with EPERM by a seccomp policy made every segment creation fail.
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter below names x86_64's sendfile")
def test_a_bus_rolls_where_a_seccomp_policy_refuses_sendfile_with_eperm(tmp_path: Path) -> None:
    """A process whose seccomp policy denies sendfile with EPERM (systemd's SystemCallFilter= with
    SystemCallErrorNumber=EPERM, a container profile) still creates segments and rolls: its
    zeros are pwritten."""
    result = run_python(
        """
        import ctypes, errno, os, struct, sys
        libc = ctypes.CDLL(None, use_errno=True)

        def instruction(code, k, jump_true=0, jump_false=0):
            return struct.pack("HBBI", code, jump_true, jump_false, k)

        LOAD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06
        AUDIT_ARCH_X86_64, SENDFILE = 0xC000003E, 40
        program = b"".join([
            instruction(LOAD, 4), instruction(JUMP_IF_EQUAL, AUDIT_ARCH_X86_64, 0, 3),
            instruction(LOAD, 0), instruction(JUMP_IF_EQUAL, SENDFILE, 0, 1),
            instruction(RETURN, 0x00050000 | errno.EPERM), instruction(RETURN, 0x7FFF0000),
        ])
        buffer = ctypes.create_string_buffer(program)

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
        filter_ = Program(len(program) // 8, ctypes.addressof(buffer))
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(
            PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(filter_), 0, 0
        ):
            print("no seccomp here", errno.errorcode[ctypes.get_errno()])
            sys.exit(3)
        zero, null = os.open("/dev/zero", os.O_RDONLY), os.open("/dev/null", os.O_WRONLY)
        try:
            os.sendfile(null, zero, None, 1)
            sys.exit("sendfile was not refused")
        except PermissionError:
            pass
        from filelog_bus import LogWriter, fs
        with LogWriter(sys.argv[1], segment_bytes=2**20) as writer:
            offsets = [writer.append("c", bytes([n % 251 + 1]) * 4000) for n in range(600)]
        print(len(offsets))
        """,
        str(tmp_path / "bus"),
    )
    if result.returncode == 3:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["600"]
    assert len(list_segment_bases(str(tmp_path / "bus"))) > 2
    assert len(read_all(tmp_path / "bus")) == 600
    assert verify_bus(str(tmp_path / "bus")).healthy


def test_the_next_segment_is_prepared_from_half_full_and_the_roll_takes_that_file(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    size = preallocated_size(SEGMENT)
    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        base, offsets = past_the_first_segment(writer)
        offsets += fill_to(writer, base, 0.45)
        assert not standby(bus).exists(), "prepared before the segment was half full"
        offsets += fill_to(writer, base, 0.55)
        wait_for(lambda: standby(bus).exists(), "preparing the standby")  # while the writer appends
        assert standby(bus).stat().st_size == size and only_zeros(standby(bus))
        assert leftovers(bus) == []
        held = os.open(standby(bus), os.O_RDONLY)  # while held, its inode number is not reused
        try:
            offsets += fill_to(writer, base, 1.01)  # the roll
            new_base = list_segment_bases(str(bus))[-1]
            assert new_base > base
            new_segment = bus / segment_name(new_base)
            assert new_segment.stat().st_ino == os.fstat(held).st_ino, "the roll did not take the standby"
        finally:
            os.close(held)
        assert new_segment.stat().st_size == size
        assert not standby(bus).exists()
        offsets += fill_to(writer, new_base, 0.6)  # the next one is prepared in its turn
    assert standby(bus).exists() and only_zeros(standby(bus))  # close waited for it: complete
    assert leftovers(bus) == []
    assert [record.offset for record in read_all(bus)] == offsets
    assert verify_bus(str(bus)).healthy


def test_small_segments_and_small_buses_get_no_standby(tmp_path: Path) -> None:
    """Segments under BACKGROUND_BYTES are zero-filled at the roll; a bus whose active segment never
    got half full has no standby: no disk spent ahead for nothing."""
    small = tmp_path / "small"
    with LogWriter(small, segment_bytes=64 * 1024, durability="never") as writer:
        for _ in range(300):
            writer.append("c", PAYLOAD)
    assert len(list_segment_bases(str(small))) > 3
    assert not standby(small).exists()
    assert (small / segment_name(list_segment_bases(str(small))[-1])).stat().st_size == preallocated_size(
        64 * 1024
    )
    default = tmp_path / "default"
    with LogWriter(default) as writer:
        writer.append("c", PAYLOAD)
    assert not standby(default).exists()


# Went wrong: a failed standby preparation left standby.segment.new behind.
@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("call", ["open", "write_zeros", "fsync", "replace"])
def test_a_failed_preparation_costs_only_speed(tmp_path: Path, call: str, error: int) -> None:
    """A failing call of the background preparation (EIO, a full disk) neither stops the writer nor
    costs a record: the roll zero-fills the new segment itself, and no temporary file is left."""
    bus = tmp_path / "bus"
    temporary = str(standby(bus)) + TEMPORARY_SUFFIX
    target = str(standby(bus)) if call == "replace" else temporary  # the path each call acts on

    def decide(name: str, path: str | None, args: tuple[object, ...]) -> int | None:
        return error if name == call and path == target else None

    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        with path_faults(decide) as fired:
            offsets = fill_to(writer, 0, 0.6)
            wait_for(lambda: fired, "the injected fault")
            offsets += fill_to(writer, 0, 1.2)  # rolls without a standby
        assert writer.failure is None
        assert fired == [(call, target)]
        new_base = list_segment_bases(str(bus))[-1]
        assert new_base > 0
        assert (bus / segment_name(new_base)).stat().st_size == preallocated_size(SEGMENT)
    assert leftovers(bus) == []
    assert [record.offset for record in read_all(bus)] == offsets
    assert verify_bus(str(bus)).healthy


def test_a_standby_of_another_size_and_a_half_written_one_are_not_used(tmp_path: Path) -> None:
    """A standby left by a writer with another segment size is deleted, not taken; a half-written
    one (a crash in the middle) is a temporary file, removed by the next open."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        offsets = [writer.append("c", PAYLOAD)]
    standby(bus).write_bytes(bytes(preallocated_size(32 * 1024)))
    half_written = Path(str(standby(bus)) + TEMPORARY_SUFFIX)
    half_written.write_bytes(b"\x01" * 5000)
    held = os.open(standby(bus), os.O_RDONLY)  # while held, its inode number is not reused
    try:
        with LogWriter(bus, segment_bytes=64 * 1024) as writer:
            assert leftovers(bus) == []
            while len(list_segment_bases(str(bus))) < 2:
                offsets.append(writer.append("c", PAYLOAD))
            new = bus / segment_name(list_segment_bases(str(bus))[-1])
            assert new.stat().st_ino != os.fstat(held).st_ino
            assert new.stat().st_size == preallocated_size(64 * 1024)
            assert not standby(bus).exists()
    finally:
        os.close(held)
    assert [record.offset for record in read_all(bus)] == offsets


CHILD = """
import os, signal, sys
from filelog_bus import LogWriter, fs
bus, segment, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
writer = LogWriter(bus, segment_bytes=segment, durability=durability).open()
payload = bytes(range(256)) * 4
while True:
    offset = writer.append("c", payload)
    print(offset, flush=True)
    if writer.end_offset > segment * {stop}:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("stop", "durability"), [(0.51, "always"), (0.55, "never"), (1.05, "always")])
def test_sigkill_while_the_standby_is_prepared_or_taken(tmp_path: Path, stop: float, durability: str) -> None:
    """A writer killed right after starting the preparation (or just after a roll took the standby):
    the next open removes any half-written standby, every acknowledged record is there, and the bus
    goes on rolling into full-size segments."""
    bus = tmp_path / "bus"
    child = spawn_python(CHILD.format(stop=stop), str(bus), str(SEGMENT), durability)
    output, _ = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    acknowledged = [int(line) for line in output.split()]
    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        assert leftovers(bus) == []
        if standby(bus).exists():  # only ever complete
            assert standby(bus).stat().st_size == preallocated_size(SEGMENT) and only_zeros(standby(bus))
        assert [record.offset for record in read_all(bus)] == acknowledged
        base = list_segment_bases(str(bus))[-1]
        more = fill_to(writer, base, 1.1)
    bases = list_segment_bases(str(bus))
    assert (bus / segment_name(bases[-1])).stat().st_size == preallocated_size(SEGMENT)
    assert [record.offset for record in read_all(bus)][-len(more) :] == more
    assert verify_bus(str(bus)).healthy


def test_a_directory_left_with_only_a_standby_holds_no_bus(tmp_path: Path) -> None:
    """The standby is no part of a bus's data: a directory left with only it (and the lock) is an
    empty directory to a writer, which creates its bus there (and deletes the standby of another
    size at its first roll), and to the tools."""
    bus = tmp_path / "bus"
    bus.mkdir()
    standby(bus).write_bytes(bytes(4096))
    (bus / "writer.lock").write_text("1\n")
    assert bus_state(str(bus)) == "empty"
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        offsets = [writer.append("c", PAYLOAD) for _ in range(100)]
    assert [record.offset for record in read_all(bus)] == offsets
    assert not standby(bus).exists()


# Went wrong: a standby that was also a segment (a power cut between link and rename) was taken and overwritten.
def test_a_standby_that_is_also_a_segment_is_never_taken(tmp_path: Path) -> None:
    """A power cut can keep a roll's link of the renamed standby to the segment's name and lose the
    rename: the standby and the segment are then one file. A later roll whose sealed segment has
    exactly the standby's size must not take it (that would overwrite the segment's header)."""
    bus = tmp_path / "bus"
    payload = bytes(993)  # a 1,024-byte record: 64 of them fill a 64 KiB segment exactly
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        offsets = [writer.append("c", payload, 1.0) for _ in range(64)]
        assert writer.end_offset == 64 * 1024 and list_segment_bases(str(bus)) == [0]
    os.link(bus / segment_name(0), standby(bus))  # the state that power cut leaves
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        offsets.append(writer.append("c", payload, 2.0))  # seals segment 0 at 64 KiB, then rolls
    assert list_segment_bases(str(bus)) == [0, 64 * 1024]
    assert (bus / segment_name(0)).stat().st_nlink == 1
    assert [record.offset for record in read_all(bus)] == offsets
    assert verify_bus(str(bus)).healthy


# Went wrong: an interrupt while close() waited for the standby released the lock while the thread still wrote.
def test_an_interrupt_while_close_waits_for_the_standby_does_not_let_the_thread_outlive_the_writer(
    tmp_path: Path,
) -> None:
    """Ctrl-C (here: a real SIGALRM whose handler raises) lands while close() waits for the standby
    thread: the interrupt is raised once the thread has finished, never while it still writes in a
    bus whose lock is released."""
    bus = tmp_path / "bus"
    temporary = str(standby(bus)) + TEMPORARY_SUFFIX
    may_finish = threading.Event()
    paths: dict[int, str] = {}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "write_zeros" and paths.get(args[0]) == temporary:
                may_finish.wait(60)  # the preparation is slow: close() has to wait for it
            result = original(*args, **kwargs)
            if name == "open":
                paths[result] = os.fspath(args[0])
            return result

        return call

    def on_alarm(signum: int, frame: object) -> None:
        threading.Timer(0.5, may_finish.set).start()  # the preparation ends a while after the interrupt
        raise KeyboardInterrupt

    writer = LogWriter(bus, segment_bytes=SEGMENT, durability="never").open()
    base, offsets = past_the_first_segment(writer)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with seam_wrapped(wrap):
            offsets += fill_to(writer, base, 0.6)
            wait_for(lambda: os.path.exists(temporary), "the preparation to start")
            writer.sync()  # so that close() soon waits for the thread, where the interrupt lands
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                writer.close()
            # (Thread.is_alive() cannot tell: an interrupted join() marks the thread stopped.)
            assert not os.path.exists(temporary), "close() raised while the thread still wrote in the bus"
            assert standby(bus).stat().st_size == preallocated_size(SEGMENT)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        may_finish.set()
    with LogWriter(bus, segment_bytes=SEGMENT, lock_timeout=0) as second:  # the lock is free
        assert second.end_offset == offsets[-1] + len(encode_record("c", 1.0, PAYLOAD))
    assert [record.offset for record in read_all(bus)] == offsets


THREAD_REFUSED = """
import sys, threading
from filelog_bus import LogWriter, fs
from filelog_bus.segment import list_segment_bases
bus, how = sys.argv[1], sys.argv[2]
real_start = threading.Thread.start
def start(thread):  # the process cannot have another thread (a limit reached), or Ctrl-C lands there
    if thread.name == "filelog-bus standby":
        raise RuntimeError("can't start new thread") if how == "limit" else KeyboardInterrupt()
    real_start(thread)
threading.Thread.start = start
writer = LogWriter(bus, segment_bytes=4 * 2**20).open()
try:
    while len(list_segment_bases(bus)) < 2:
        writer.append("c", b"x" * 30_000)
    print("appended", writer.failure)
except KeyboardInterrupt:
    print("interrupted", type(writer.failure).__name__)
writer.close()
print("closed")
"""


# Went wrong: a standby thread that could not start failed the append, and close() waited forever.
@pytest.mark.parametrize("how", ["limit", "interrupt"])
def test_a_standby_thread_that_cannot_start_costs_no_append_and_close_never_hangs(
    tmp_path: Path, how: str
) -> None:
    """No thread to be had: the appends go on and the roll zero-fills the segment itself. Ctrl-C in
    the thread's start: the writer stops with it, as anywhere in an append. close() returns either way
    (it must not wait for a thread that never ran)."""
    bus = tmp_path / "bus"
    child = spawn_python(THREAD_REFUSED, str(bus), how)
    output, errors = child.communicate(timeout=120)
    assert child.returncode == 0, errors
    assert output.split("\n")[:2] == (
        ["appended None", "closed"] if how == "limit" else ["interrupted KeyboardInterrupt", "closed"]
    )
    assert verify_bus(str(bus)).healthy
    assert leftovers(bus) == [] and not standby(bus).exists()
