"""What a path is to filelog-bus: a bus, an empty directory, nothing yet, something else, or out of sight.

``classify`` is the one place that decides it; the writer (create a bus here?), the reader
(read one here?) and the inspecting commands ask it, and each words its refusal for its
own user. A permission problem is ``UNREADABLE``, never ``MISSING``: ``os.path.exists``
answers False on one, which would send the user looking for a directory that is there.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from filelog_bus.compat import StrEnum
from filelog_bus.errors import BusPermissionError, NotABusError
from filelog_bus.layout import WATERMARK_NAME, holds_no_records, parse_segment_name, segment_bases
from filelog_bus.os_errors import READ_PERMISSION_ADVICE, permission_error
from filelog_bus.watermark import read_published


class DirectoryState(StrEnum):
    """What a path holds, as a writer would see it (the values are the words the CLI uses)."""

    #: A directory holding a watermark or a segment.
    BUS = "bus"
    #: A directory holding none of a bus's data (perhaps the lock or a standby): a writer creates a bus there.
    EMPTY = "empty"
    #: Nothing at the path: a writer creates the directory (when its parent exists).
    MISSING = "missing"
    #: A file, or a directory of other files: nothing may create a bus there.
    NOT_A_BUS = "not a bus"
    #: The user may not look (EACCES, EPERM): the path may well hold a bus.
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class BusDirectory:
    """A path classified, with what each state's refusal needs to say."""

    path: str
    state: DirectoryState
    #: NOT_A_BUS: False for a file (anything but a directory), True for a directory of other files.
    is_directory: bool = True
    #: MISSING: whether the parent directory exists (a writer creates the bus directory only there).
    parent_exists: bool = True
    #: The directory's file names (sorted), when it was listed.
    names: tuple[str, ...] = ()
    #: UNREADABLE: the refused call, the path it refused, and whether it was the listing (not a stat).
    denied: OSError | None = None
    denied_path: str = ""
    denied_listing: bool = False

    @property
    def parent(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    @property
    def segment_bases(self) -> list[int]:
        """Sorted base offsets of the segments the listing found."""
        return segment_bases(self.names)

    @property
    def foreign(self) -> list[str]:
        """The names that are no bus's: they make a non-empty directory NOT_A_BUS."""
        return [name for name in self.names if not holds_no_records(name)]

    def permission_error(self, purpose: str) -> BusPermissionError:
        """UNREADABLE's error: what was refused, to do what, and the permissions a user needs."""
        assert self.denied is not None
        verb = "reading" if self.denied_listing else "looking at"
        return permission_error(
            self.denied,
            f"permission denied {verb} {self.denied_path} to {purpose}",
            path=self.denied_path,
            advice=READ_PERMISSION_ADVICE,
        )


def classify(path: str) -> BusDirectory:
    """What ``path`` is, without changing anything. A failed call other than a refusal is raised."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _missing(path)
    except PermissionError as exc:
        return BusDirectory(path, DirectoryState.UNREADABLE, denied=exc, denied_path=path)
    if not stat.S_ISDIR(status.st_mode):
        return BusDirectory(path, DirectoryState.NOT_A_BUS, is_directory=False)
    try:
        names = tuple(sorted(os.listdir(path)))
    except FileNotFoundError:
        return _missing(path)  # deleted since the stat
    except NotADirectoryError:  # replaced by a file since the stat
        return BusDirectory(path, DirectoryState.NOT_A_BUS, is_directory=False)
    except PermissionError as exc:
        refused = os.fsdecode(exc.filename) if exc.filename else path
        return BusDirectory(
            path, DirectoryState.UNREADABLE, denied=exc, denied_path=refused, denied_listing=True
        )
    if all(holds_no_records(name) for name in names):
        return BusDirectory(path, DirectoryState.EMPTY, names=names)
    if WATERMARK_NAME in names or any(parse_segment_name(name) is not None for name in names):
        return BusDirectory(path, DirectoryState.BUS, names=names)
    return BusDirectory(path, DirectoryState.NOT_A_BUS, names=names)


def _missing(path: str) -> BusDirectory:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        parent_exists = stat.S_ISDIR(os.stat(parent).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        parent_exists = False
    except PermissionError as exc:
        return BusDirectory(path, DirectoryState.UNREADABLE, denied=exc, denied_path=parent)
    return BusDirectory(path, DirectoryState.MISSING, parent_exists=parent_exists)


def bus_state(path: str) -> DirectoryState:
    """BUS, EMPTY or MISSING (a writer may create it), for the inspecting commands.

    Raises NotABusError for anything a writer would refuse, and BusPermissionError when the user
    may not look (not MISSING: the path may well exist).
    """
    directory = classify(path)
    state = directory.state
    if state is DirectoryState.UNREADABLE:
        raise directory.permission_error("look at the bus")
    if state is DirectoryState.MISSING and not directory.parent_exists:
        raise NotABusError(
            f"{path} does not exist, nor does its parent directory {directory.parent}", path=path
        )
    if state is DirectoryState.NOT_A_BUS:
        if not directory.is_directory:
            raise NotABusError(f"{path} is not a directory, so it is not a filelog-bus", path=path)
        names = directory.names
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise NotABusError(
            f"{path} holds no filelog-bus (it has no watermark file and no segment: {shown})", path=path
        )
    return state


def require_bus(path: str) -> None:
    """Raise NotABusError unless ``path`` already holds a bus (so that nothing creates one there)."""
    state = bus_state(path)
    if state is not DirectoryState.BUS:
        raise NotABusError(
            f"no bus at {path}: the directory "
            f"{'does not exist' if state is DirectoryState.MISSING else 'is empty'}",
            path=path,
        )


def require_directory(path: str, purpose: str) -> BusDirectory:
    """The directory at ``path``, classified (its listing included); NotABusError unless it is a
    directory, BusPermissionError when the user may not look.

    (A directory that holds no bus is refused by the watermark's reader, or reported by verify.)
    """
    directory = classify(path)
    refuse_unless_directory(directory, purpose)
    return directory


def refuse_unless_directory(directory: BusDirectory, purpose: str, *, missing_ok: bool = False) -> None:
    """The refusals of a reading caller: an unreadable path (for ``purpose``), a missing one (unless
    ``missing_ok``: a reader may wait for the bus), anything but a directory."""
    path = directory.path
    if directory.state is DirectoryState.UNREADABLE:
        raise directory.permission_error(purpose)
    if directory.state is DirectoryState.MISSING and not missing_ok:
        raise NotABusError(
            f"no bus at {path}: the directory does not exist", path=path, advice="check the path"
        )
    if directory.state is DirectoryState.NOT_A_BUS and not directory.is_directory:
        raise NotABusError(f"{path} is not a directory, so it is not a filelog-bus", path=path)


def is_missing(path: str) -> bool:
    """Whether nothing is at ``path`` (yet): one stat, no listing, for a caller that only waits for a
    bus to appear. A refused look raises (PermissionError): the path may well be there."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    return False


def segments_and_watermark(path: str, purpose: str) -> tuple[list[int], int]:
    """Segment bases, then the watermark: read in this order, every listed base is <= the watermark.

    ``purpose`` words a refusal (the caller's, as in "permission denied reading PATH to PURPOSE").
    """
    bases = require_directory(path, purpose).segment_bases
    return bases, read_published(path)
