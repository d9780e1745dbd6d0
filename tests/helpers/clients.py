"""Helpers for the tests of hermes-client caches (clients, --set-offsets, retention sparing clients).

Buses hold Hermes-like events written with LogWriter at chosen times; caches are written by
the Hermes stand-in (tests/helpers/hermes_standin/hermes_cache.py) as hermes-client writes them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelog_bus import Record
from helpers.bus import SMALL, write_bus
from helpers.cli import bus
from helpers.processes import STANDIN_DIR

if str(STANDIN_DIR) not in sys.path:
    sys.path.insert(0, str(STANDIN_DIR))

import hermes_cache


def event_payload(key: str, category: str = "base") -> bytes:
    """An event as hermes-server puts it on the bus (Event.to_json(): pretty-printed JSON)."""
    fields = {"evcategory": category, "eventtype": "added", "objtype": "user", "objpkey": key, "objattrs": {}}
    return json.dumps(fields, indent=4).encode("utf-8")


def events_bus(path: Path, times: Sequence[float], prefix: str = "u") -> list[Record]:
    """One base event per time, keys u0, u1, ..., in small segments."""
    return write_bus(path, [("base", event_payload(f"{prefix}{i}"), t) for i, t in enumerate(times)], **SMALL)


def aged_times(*groups: tuple[int, float], now: float | None = None) -> list[float]:
    """`count` event times `age` seconds ago for each (count, age), one second apart, oldest first."""
    now = time.time() if now is None else now
    return [now - age + i for count, age in groups for i in range(count)]


def write_cache(
    directory: Path, appname: str, *, compressed: bool, nextoffset: int | None, **offsets: int | None
) -> Path:
    """A hermes-client cache; an initialised one by default (initsync read from offset 0)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = hermes_cache.cache_path(directory, appname, compressed=compressed)
    values = {"initstartoffset": 0, "initstopoffset": 0, **offsets, "nextoffset": nextoffset}
    hermes_cache.save(path, hermes_cache.new_content(**values))
    return path


def unread(records: Sequence[Record], nextoffset: int) -> tuple[int, int, float | None]:
    """(events, bytes, oldest time) of the records at or after `nextoffset`."""
    left = [r for r in records if r.offset >= nextoffset]
    return len(left), sum(r.size for r in left), left[0].timestamp if left else None


def clients_json(*args: object) -> tuple[int, dict[str, Any]]:
    result = bus("clients", *args, "--json")
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def by_client(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {client["client"]: client for client in report["clients"]}


def offsets(cache: Path) -> tuple[int | None, int | None, int | None]:
    content = hermes_cache.load(cache)
    return content["initstartoffset"], content["initstopoffset"], content["nextoffset"]
