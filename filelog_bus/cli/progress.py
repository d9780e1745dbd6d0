"""A progress bar for the commands that read a whole bus (stats, verify), on a terminal only."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from filelog_bus.cli.format import human_bytes


class _ProgressBar:
    """A one-line progress bar on a terminal's stderr, redrawn at most 10 times a second."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn_at < 0.1 and done < total:
            return
        self.drawn_at = now
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(fraction * 30)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{human_bytes(done)} of {human_bytes(total)}\x1b[K"
        )
        self.stream.flush()

    def clear(self) -> None:
        if self.drawn_at:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def progress_bar(label: str) -> _ProgressBar | None:
    """A progress bar when stderr is a terminal; None when it is piped or redirected."""
    return _ProgressBar(label, sys.stderr) if sys.stderr.isatty() else None
