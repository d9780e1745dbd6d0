"""Running a command: every error a user can cause becomes one stderr line and an exit status.

Never a traceback: the exit-status table (filelog_bus.cli.exits) says what each status means.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from filelog_bus.cli.exits import (
    EXIT_BAD_CACHE,
    EXIT_BUSY,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_OUT_OF_RANGE,
    EXIT_USAGE,
)
from filelog_bus.errors import (
    BusLockedError,
    ClientCacheError,
    ClientOffsetError,
    ClientRunningError,
    ConfigError,
    CorruptionError,
    ExportRunningError,
    FilelogBusError,
    InvalidOffsetError,
    InvalidRecordError,
    KafkaBusError,
    NotABusError,
    OffsetOutOfRangeError,
    TopicMismatchError,
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(prog: str, message: str, status: int) -> int:
    sys.stderr.write(f"{prog}: error: {_one_line(message)}\n")
    return status


def _os_message(exc: OSError) -> str:
    message = exc.strerror or str(exc)
    return f"{message}: {exc.filename}" if exc.filename and str(exc.filename) not in message else message


def _discard_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot fail noisily."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command; map every error a user can cause to one stderr line and an exit status."""
    try:
        status = command()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _discard_stdout()  # the reader of our output is gone (| head): nothing is wrong
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (NotABusError, TopicMismatchError) as exc:
        return fail(prog, str(exc), EXIT_NOT_A_BUS)
    except (OffsetOutOfRangeError, ClientOffsetError) as exc:
        return fail(prog, str(exc), EXIT_OUT_OF_RANGE)
    except (
        ExportRunningError,
        BusLockedError,
        ClientRunningError,
    ) as exc:  # ahead of KafkaBusError, which one is
        return fail(prog, str(exc), EXIT_BUSY)
    except KafkaBusError as exc:
        return fail(prog, str(exc), EXIT_KAFKA)
    except CorruptionError as exc:
        return fail(prog, f"{exc}; `filelog-bus verify` lists every problem", EXIT_DAMAGED)
    except ClientCacheError as exc:
        return fail(prog, str(exc), EXIT_BAD_CACHE)
    except (ConfigError, InvalidOffsetError, InvalidRecordError) as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except FilelogBusError as exc:  # includes BusWriteError and BusPermissionError
        return fail(prog, str(exc), EXIT_FAILED)
    except OSError as exc:
        return fail(prog, _os_message(exc), EXIT_FAILED)


@contextmanager
def stop_signals_ignored_once_done() -> Iterator[None]:
    """For a command that stops on SIGTERM or Ctrl-C (a follow, a bridge): once its work is over,
    both are ignored. Python puts the default dispositions back while it shuts down, so a signal in
    those last milliseconds (systemd stopping a service that just failed) would kill the process
    instead of letting it exit with its status."""
    try:
        yield
    finally:
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, signal.SIG_IGN)
