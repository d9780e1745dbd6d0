"""The body of Hermes's producer plugin `filelog`: hermes-server writes its events to a filelog bus.

`hermes_plugin.FilelogProducerPlugin`, the class Hermes loads, hands its calls to `BusProducer`.
One record per event: category = `event.evcategory`, payload = `event.to_json()` in UTF-8.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from filelog_bus.errors import BusClosedError, BusLockedError, ConfigError
from filelog_bus.hermes.clients import log_outcome, retention_sparing
from filelog_bus.hermes.context import SETTINGS, hermes_logger
from filelog_bus.os_errors import restated
from filelog_bus.writer import LogWriter

if TYPE_CHECKING:
    from lib.datamodel.event import Event

#: The category and last event type of an initsync sequence (init-start, added..., init-stop).
INITSYNC_CATEGORY = "initsync"
INITSYNC_STOP = "init-stop"
_UNWRITABLE_ADVICE = (
    "run hermes-server as the user owning that directory, or give that user write access to it and its files"
)


class BusProducer:
    """The producer plugin's body: `open()` takes the bus's writer lock; `send()` returns once the
    event is durable. Settings are the plugin's own (validated by Hermes against its schema)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings
        self._writer: LogWriter | None = None
        self._initsync_durable_once = bool(self._settings.get("initsync_durable_once", True))

    @property
    def _path(self) -> str:
        return self._settings["path"]

    def open(self) -> None:
        """Take the writer lock, recover the bus if needed, then apply the retention settings."""
        if self._writer is not None:
            return
        writer = self._new_writer()
        self._open_writer(writer)
        try:
            self._apply_retention(writer)
            if writer.failure is not None:  # a failed retention pass stopped the writer: recover now,
                writer.open()  # so that this update loop's events still flow
        except BaseException:
            writer.close()  # Hermes does not call close() when open() fails: never keep the lock
            raise
        self._writer = writer

    def _new_writer(self) -> LogWriter:
        options: dict[str, Any] = {"durability": self._settings.get("durability", "always")}
        if self._settings.get("segment_bytes") is not None:
            options["segment_bytes"] = self._settings["segment_bytes"]
        try:
            return LogWriter(self._path, **options)
        except ConfigError as exc:
            raise ConfigError(exc.reason, advice=f"fix {SETTINGS} in hermes-server's configuration") from exc

    def _open_writer(self, writer: LogWriter) -> None:
        """Open the writer, turning lock and permission failures into advice for the Hermes admin."""
        try:
            writer.open()
        except BusLockedError as exc:
            raise BusLockedError(
                f"hermes-server cannot open the filelog bus {self._path!r} for writing: another writer "
                f"(pid {exc.holder}) holds its lock",
                lock_path=exc.lock_path,
                holder=exc.holder,
                advice=f"only one hermes-server may produce on a bus: stop the other one, or give this one its "
                f"own bus directory ({SETTINGS}.path)",
            ) from exc
        except PermissionError as exc:
            reason = f"hermes-server cannot write the filelog bus {self._path!r}"
            raise restated(exc, reason, path=self._path, advice=_UNWRITABLE_ADVICE) from exc

    def _apply_retention(self, writer: LogWriter) -> None:
        """Delete expired segments; a failure to delete is logged, not fatal (events still flow).

        With `retention_clients`, events those clients have not read are kept unless
        `retention_bytes` is exceeded (and what each client loses is logged).
        """
        max_age_days = self._settings.get("retention_in_days")
        max_bytes = self._settings.get("retention_bytes")
        clients = self._settings.get("retention_clients")
        if max_age_days is None and max_bytes is None:
            return
        try:
            if clients:
                outcome = retention_sparing(writer, clients, max_age_days=max_age_days, max_bytes=max_bytes)
                log_outcome(outcome, self._path, hermes_logger())
                return
            deleted = writer.apply_retention(max_age_days=max_age_days, max_bytes=max_bytes)
        except ConfigError as exc:
            raise ConfigError(exc.reason, advice=f"fix {SETTINGS} in hermes-server's configuration") from exc
        except OSError as exc:
            hermes_logger().error(
                f"filelog bus {self._path!r}: retention could not delete old segments ({exc}); the bus keeps "
                "growing until hermes-server may delete files in that directory"
            )
            return
        if deleted:
            hermes_logger().info(
                f"filelog bus {self._path!r}: retention deleted {len(deleted)} old segment(s): {deleted}"
            )
        if writer.retention_note is not None:
            hermes_logger().warning(f"filelog bus {self._path!r}: {writer.retention_note}")

    def close(self) -> None:
        """Flush and release the writer lock (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def send(self, event: Event) -> None:
        """Append one event; with durability `always` it is on disk when this returns.

        Except, with `initsync_durable_once` (the default), the events of an initsync sequence
        before its `init-stop`: they are made durable, and shown to clients, all at once when
        `init-stop` (or any event of another category) is sent, or at close(). Hermes commits
        nothing and saves no cache between the sends of a sequence, and clients ignore a
        sequence without its `init-stop`, so a crash in the middle loses nothing anyone relied on.
        """
        if self._writer is None:
            raise BusClosedError(
                f"filelog bus {self._path!r} is not open",
                path=self._path,
                advice="send events inside `with bus:` (open() first)",
            )
        category = event.evcategory
        deferred = (
            self._initsync_durable_once and category == INITSYNC_CATEGORY and event.eventtype != INITSYNC_STOP
        )
        self._writer.append(category, event.to_json().encode("utf-8"), time.time(), deferred=deferred)
