"""The body of Hermes's consumer plugin `filelog`: a hermes-client reads its events from a filelog bus.

`hermes_consumer_plugin.FilelogConsumerPlugin`, the class Hermes loads, hands its calls to
`BusConsumer`. Offsets are the records' byte positions (ints that grow along the bus), so a
client's `seek(event.offset + 1)` resumes right after `event`.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from filelog_bus.bus_directory import is_missing
from filelog_bus.errors import (
    BusClosedError,
    NotABusError,
    OffsetOutOfRangeError,
    RecordsExpiredError,
)
from filelog_bus.hermes.context import SETTINGS, hermes_logger
from filelog_bus.os_errors import restated
from filelog_bus.reader import LogReader
from filelog_bus.record import Record

if TYPE_CHECKING:
    from lib.datamodel.event import Event

#: Hermes's `Event.from_json`: the body rebuilds events without importing Hermes itself.
EventFromJson = Callable[[str], "Event"]

#: How often a drained consumer checks for new events where the writer's wake-up is unavailable
#: (filelog_bus/wakeup.py; elsewhere it is woken on publication): its latency and CPU cost are in
#: benchmarks/RESULTS.md, "Against a SQLite-table bus" (Hermes's SQLite consumer polls every 500 ms).
POLL_SECONDS = 0.02

_README = "filelog-bus's docs/HERMES.md ('Move a deployment from the SQLite bus')"
_UNREADABLE_ADVICE = (
    "give the client's user read access to the bus directory and its files, e.g. add it to the group of the "
    "hermes-server user and make the bus group-readable (chmod -R g+rX, and chmod g+s on the directory)"
)
_RETENTION_HINT = (
    "events this client had not read yet were deleted by the bus's retention (retention_in_days / "
    "retention_bytes of hermes-server's filelog settings): re-initialise this client from a fresh initsync "
    "sequence, and consider a longer retention"
)


def event_from_record(record: Record, event_from_json: EventFromJson) -> Event:
    """Rebuild the Event and stamp it with its bus offset and time of sending.

    The time is naive local time, as Hermes's own SQLite and Kafka consumers give it
    (`datetime.fromtimestamp`): hermes-client compares it with `datetime.now()` to decide when
    a trashed object is purged, so UTC would purge early wherever local time is ahead of UTC.
    """
    event = event_from_json(record.payload.decode("utf-8"))
    event.offset = record.offset
    event.timestamp = datetime.datetime.fromtimestamp(record.timestamp)
    return event


def _with_hint(error: OffsetOutOfRangeError, message: str, hint: str) -> OffsetOutOfRangeError:
    """Same error type and range, with a message that says what the Hermes admin should do."""
    return type(error)(
        message, offset=error.offset, begin=error.begin, end=error.end, path=error.path, advice=hint
    )


class BusConsumer:
    """The consumer plugin's body: read-only, any number per bus; a bus directory that does not
    exist yet is an empty bus. `event_from_json` is Hermes's `Event.from_json`."""

    def __init__(self, settings: dict[str, Any], event_from_json: EventFromJson) -> None:
        self._settings = settings
        self._event_from_json = event_from_json
        self._reader: LogReader | None = None
        self._timeout_seconds: float | None = None  # until setTimeout(): wait forever, like Kafka
        self._told_missing = False  # log "does not exist yet" once, not on every update loop

    @property
    def _path(self) -> str:
        return self._settings["path"]

    def open(self) -> None:
        if self._reader is not None:
            return
        self._note_missing_bus()
        reader = LogReader(
            self._path, timeout=self._timeout_seconds, missing_ok=True, poll_interval=POLL_SECONDS
        )
        with self._explained_errors():
            try:
                reader.open()
            except NotABusError as exc:
                raise NotABusError(
                    exc.reason,
                    path=exc.path,
                    advice=f"set {SETTINGS}.path of this client to the bus directory hermes-server writes "
                    "(the `path` of its filelog producer)",
                ) from exc
        self._reader = reader

    def _note_missing_bus(self) -> None:
        """Log once that the bus does not exist yet: clients often start before hermes-server creates it.

        Other problems reaching the path (permissions) are the engine's to report, with advice.
        """
        if self._told_missing:
            return
        try:
            missing = is_missing(self._path)
        except OSError:
            return
        if missing:
            hermes_logger().info(f"filelog bus {self._path!r} does not exist yet: waiting for hermes-server")
            self._told_missing = True

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def seek_to_beginning(self) -> None:
        """Position on the oldest event still on the bus."""
        with self._explained_errors():
            self._open_reader().seek_to_beginning()

    def seek(self, offset: Any) -> None:
        """Position on the first event at or after `offset` (so `last.offset + 1` resumes after `last`)."""
        with self._explained_errors():
            self._open_reader().seek(offset)

    def set_timeout(self, timeout_ms: int | None) -> None:
        """How long iteration waits for a new event once the bus is drained (None = forever)."""
        self._timeout_seconds = None if timeout_ms is None else timeout_ms / 1000
        if self._reader is not None:
            self._reader.set_timeout(self._timeout_seconds)

    def find_next_event_of_category(self, category: str) -> Event | None:
        """First event of `category` from the current position, found through the category index.

        As with Hermes's own bus plugins, the search consumes the bus: the position moves just
        past the event returned, or to the end of the bus when none is there, where it waits up
        to the timeout for one to be sent. Events of other categories are never deserialised.
        """
        with self._explained_errors():
            record = self._open_reader().find_next_waiting(category)
        return None if record is None else event_from_record(record, self._event_from_json)

    def __iter__(self) -> Iterator[Event]:
        """Events from the current position; at the end, wait up to the timeout for each new one."""
        with self._explained_errors():
            for record in self._open_reader():
                yield event_from_record(record, self._event_from_json)

    def _open_reader(self) -> LogReader:
        if self._reader is None:
            raise BusClosedError(
                f"filelog bus {self._path!r} is not open",
                path=self._path,
                advice="use the consumer inside `with bus:` (open() first)",
            )
        return self._reader

    @contextlib.contextmanager
    def _explained_errors(self) -> Iterator[None]:
        """Re-raise the engine's errors a Hermes admin can fix with what to do about them."""
        try:
            yield
        except RecordsExpiredError as exc:
            raise _with_hint(exc, f"filelog bus {self._path!r} lost unread events", _RETENTION_HINT) from exc
        except OffsetOutOfRangeError as exc:
            cause = (
                f"either {_RETENTION_HINT}, or this client's cached offsets come from another bus (see {_README})"
                if exc.offset < exc.begin
                else f"this client's cached offsets come from another bus: reset them as {_README} explains"
            )
            raise _with_hint(exc, f"filelog bus {self._path!r} has no event there", cause) from exc
        except PermissionError as exc:
            reason = f"this hermes-client cannot read the filelog bus {self._path!r}"
            raise restated(exc, reason, path=self._path, advice=_UNREADABLE_ADVICE) from exc
