"""The clients' lag in the Prometheus text format, for node_exporter's textfile collector.

The collector reads every `*.prom` file of its directory on each scrape, so the file is
replaced in one step (a temporary file renamed over it): a scrape never sees half of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from filelog_bus.fs import replace_outside_file
from filelog_bus.hermes.clients import BusPositions, ClientReport, ClientState

_PREFIX = "filelog_bus"


def _label(value: str) -> str:
    """A label value escaped as the text format requires (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(bus_path: str, bus: BusPositions | None, reports: Sequence[ClientReport], now: float) -> str:
    """Every metric, each with its HELP and TYPE lines, one sample per client (and per state)."""
    samples: dict[str, tuple[str, list[tuple[str, float]]]] = {
        "bus_begin_offset": ("Oldest offset still on the bus.", []),
        "bus_end_offset": ("Offset the next event will get.", []),
        "client_next_offset": ("Offset the client reads next (nextoffset in its cache).", []),
        "client_unread_events": ("Events on the bus the client has not read yet.", []),
        "client_unread_bytes": ("Bytes of the events the client has not read yet.", []),
        "client_lag_seconds": ("Age of the oldest event the client has not read (0 when none).", []),
        "client_initialised": ("1 when the client has read a whole initsync sequence.", []),
        "client_state": ("1 for the client's state (ok, behind, at risk, expired, ahead, unreadable).", []),
    }
    bus_labels = _labels(bus=bus_path)
    if bus is not None:
        samples["bus_begin_offset"][1].append((bus_labels, bus.begin))
        samples["bus_end_offset"][1].append((bus_labels, bus.end))
    for report in reports:
        labels = {"bus": bus_path, "client": report.cache.appname, "cache": report.cache.path}
        client = _labels(**labels)
        if report.cache.nextoffset is not None:
            samples["client_next_offset"][1].append((client, report.cache.nextoffset))
        if report.unread is not None:
            samples["client_unread_events"][1].append((client, report.unread.events))
            samples["client_unread_bytes"][1].append((client, report.unread.bytes))
            oldest = report.unread.oldest_time
            samples["client_lag_seconds"][1].append(
                (client, 0.0 if oldest is None else max(0.0, now - oldest))
            )
        samples["client_initialised"][1].append((client, int(report.cache.initialised)))
        for state in ClientState:
            state_labels = _labels(**labels, state=state)
            samples["client_state"][1].append((state_labels, int(report.state == state)))
    lines = []
    for name, (help_text, values) in samples.items():
        metric = f"{_PREFIX}_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f"{metric}{labels} {_number(value)}" for labels, value in values]
    return "\n".join(lines) + "\n"


def write_textfile(path: str, text: str) -> None:
    """Replace `path` with `text` in one step, readable by node_exporter (mode 0644)."""
    replace_outside_file(path, text.encode("utf-8"))
