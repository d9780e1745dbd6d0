"""Hermes message-bus producer plugin `filelog`: hermes-server writes its events to a filelog bus.

Installed into a Hermes tree as `plugins/messagebus_producers/filelog/filelog.py`, which
imports this module. The class Hermes loads; `filelog_bus.hermes.producer.BusProducer` does the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lib.plugins import AbstractMessageBusProducerPlugin

from filelog_bus.hermes.producer import BusProducer

if TYPE_CHECKING:
    from lib.datamodel.event import Event

HERMES_PLUGIN_CLASSNAME = "FilelogProducerPlugin"


class FilelogProducerPlugin(AbstractMessageBusProducerPlugin):
    """Producer: `with bus:` holds the bus's writer lock; `send()` returns once the event is durable."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._bus = BusProducer(self._settings)

    def open(self) -> None:
        self._bus.open()

    def close(self) -> None:
        self._bus.close()

    def _send(self, event: Event) -> None:
        self._bus.send(event)
