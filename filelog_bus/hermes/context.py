"""What a plugin body knows of the Hermes process it runs in: its logger and where its settings live."""

from __future__ import annotations

import builtins
import logging

#: Where the bus plugins' settings live in Hermes's configuration files (for advice in errors).
SETTINGS = "hermes.plugins.messagebus.filelog.settings"


def hermes_logger() -> logging.Logger:
    """Hermes's own logger (the thread-local `__hermes__` builtin) when running inside Hermes."""
    hermes = getattr(builtins, "__hermes__", None)
    return getattr(hermes, "logger", None) or logging.getLogger("hermes")
