"""filelog-bus: an embedded, single-host, append-only log-file message bus.

See docs/API.md for the API and docs/FORMAT.md for the on-disk format.
"""

from filelog_bus import errors
from filelog_bus.reader import LogReader
from filelog_bus.record import Record
from filelog_bus.writer import LogWriter

__all__ = ["LogReader", "LogWriter", "Record", "errors"]
