"""The `__hermes__` builtin Hermes defines for its plugins (`.logger`, `.appname`)."""

from __future__ import annotations

import builtins
import logging
import types


def install_hermes_builtin(appname: str, logger: logging.Logger | None = None) -> types.SimpleNamespace:
    """Define `__hermes__` the way Hermes does before loading plugins; return it."""
    hermes = types.SimpleNamespace(appname=appname, logger=logger or logging.getLogger(appname))
    builtins.__hermes__ = hermes  # type: ignore[attr-defined]
    return hermes


def remove_hermes_builtin() -> None:
    if hasattr(builtins, "__hermes__"):
        del builtins.__hermes__  # type: ignore[attr-defined]
