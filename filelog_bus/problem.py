"""Problem: one thing a consistency check found wrong with a bus file (diskcache's check is the model).

Check methods (``check.check_segment``, the index kinds' ``check``, ``check.verify_bus``)
return Problems instead of raising, so that one run reports everything; tools only
present them. ``kind`` is a ``DamageKind``, as a CorruptionError's ``damage``.
"""

from __future__ import annotations

from dataclasses import dataclass

from filelog_bus.errors import DamageKind


@dataclass(frozen=True)
class Problem:
    """One thing wrong; positions are None when the problem is the whole file."""

    #: File name inside the bus directory.
    file: str
    #: Byte position in that file.
    file_position: int | None
    #: Bus offset, when the problem is about a record.
    offset: int | None
    #: What kind of damage.
    kind: DamageKind
    message: str
    #: A rebuild from the segment fixes it (derived files: indexes and summaries).
    repairable: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.file_position is not None:
            where += f" at file position {self.file_position}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        return f"{where}: {self.message}"
