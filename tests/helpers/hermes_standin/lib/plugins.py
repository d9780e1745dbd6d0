"""Stand-in for Hermes's `lib.plugins`: the message-bus plugin base classes, as the contract describes."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any

from lib.datamodel.event import Event


def _logger() -> logging.Logger:
    hermes = getattr(builtins, "__hermes__", None)
    return hermes.logger if hermes is not None else logging.getLogger("hermes")


class FailedToSendEventError(Exception):
    """A producer could not put an event on the bus."""


class _ContextManagedPlugin:
    """Stores a copy of the settings; `with plugin:` calls open() then close()."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings.copy()

    def __enter__(self) -> _ContextManagedPlugin:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        try:
            self.close()
        except Exception as close_error:  # Hermes logs a close failure instead of raising it
            _logger().error(f"Error while closing {type(self).__name__}: {close_error}")
        return False

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class AbstractMessageBusProducerPlugin(_ContextManagedPlugin):
    """Server side: subclasses implement open(), close() and _send(); callers use send()."""

    def _send(self, event: Event) -> None:
        raise NotImplementedError

    def send(self, event: Event) -> None:
        try:
            self._send(event)
        except Exception as send_error:
            _logger().critical(f"Could not send event: {send_error}")
            raise FailedToSendEventError(str(send_error)) from None


class AbstractMessageBusConsumerPlugin(_ContextManagedPlugin):
    """Client side: positioning, timeout, category lookup and iteration over events."""

    def seekToBeginning(self) -> None:
        raise NotImplementedError

    def seek(self, offset: Any) -> None:
        raise NotImplementedError

    def setTimeout(self, timeout_ms: int | None) -> None:
        raise NotImplementedError

    def findNextEventOfCategory(self, category: str) -> Event | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Event]:
        raise NotImplementedError
