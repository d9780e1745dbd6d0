"""Hermes message-bus consumer plugin `filelog`: a hermes-client reads its events from a filelog bus.

Installed into a Hermes tree as `plugins/messagebus_consumers/filelog/filelog.py`, which
imports this module. The class Hermes loads; `filelog_bus.hermes.consumer.BusConsumer` does the work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lib.datamodel.event import Event
from lib.plugins import AbstractMessageBusConsumerPlugin

from filelog_bus.hermes.consumer import BusConsumer

HERMES_PLUGIN_CLASSNAME = "FilelogConsumerPlugin"


class FilelogConsumerPlugin(AbstractMessageBusConsumerPlugin):
    """Consumer: read-only, any number per bus; a bus directory that does not exist yet is an empty bus."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._bus = BusConsumer(self._settings, Event.from_json)

    def open(self) -> None:
        self._bus.open()

    def close(self) -> None:
        self._bus.close()

    def seekToBeginning(self) -> None:
        self._bus.seek_to_beginning()

    def seek(self, offset: Any) -> None:
        self._bus.seek(offset)

    def setTimeout(self, timeout_ms: int | None) -> None:
        self._bus.set_timeout(timeout_ms)

    def findNextEventOfCategory(self, category: str) -> Event | None:
        return self._bus.find_next_event_of_category(category)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._bus)
