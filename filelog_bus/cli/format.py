"""Formatting shared by the commands: times, payload previews, dump lines, tables, sizes.

Everything a payload holds is escaped before it reaches a terminal.
"""

from __future__ import annotations

import base64
import codecs
import json
import sys
import unicodedata
from datetime import datetime, timezone
from typing import Any

from filelog_bus.record import Record

#: Characters of payload shown in a dump line.
PREVIEW_CHARS = 72
#: Payload bytes decoded for a preview (a preview never needs more).
_PREVIEW_BYTES = 4 * PREVIEW_CHARS
#: Payloads up to this size that hold JSON are shown compacted in the preview.
_PREVIEW_JSON_BYTES = 64 * 1024


def format_time(timestamp: float | None, timespec: str = "milliseconds") -> str:
    """ISO 8601 UTC with a Z, as --since/--until accept it; '-' for None."""
    if timestamp is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(timestamp)  # a timestamp the writer accepted but datetime cannot show
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def printable(text: str, keep: str = "") -> str:
    """Escape control characters (a payload must not drive the terminal), except those in ``keep``."""
    if text.isprintable():
        return text
    return "".join(
        c if c in keep or c.isprintable() or unicodedata.category(c) == "Zs" else repr(c)[1:-1] for c in text
    )


def _decoded(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _as_text(payload: bytes) -> str | None:
    """The payload as text for a human, or None when it looks binary: not UTF-8, or holding a NUL
    byte (the test git and grep use)."""
    return None if b"\0" in payload else _decoded(payload)


def payload_preview(payload: bytes, width: int = PREVIEW_CHARS) -> str:
    """One short line: compact JSON, text with whitespace collapsed, or hex for binary payloads."""
    head = payload[:_PREVIEW_BYTES]
    whole = len(head) == len(payload)
    shown = width // 2 - 4
    binary = f"hex:{payload[:shown].hex()}" + ("…" if len(payload) > shown else "")
    if b"\0" in head:
        return binary
    try:  # a character cut by the preview's end is left out, not taken for binary
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return binary
    if len(payload) <= _PREVIEW_JSON_BYTES and text.lstrip()[:1] in ("{", "["):
        try:
            text = json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False)
            whole = True
        except ValueError:
            pass
    text = printable(" ".join(text.split()))
    if len(text) > width:
        return text[: width - 1] + "…"
    return text if whole else text + "…"


def dump_line(record: Record, *, preview: bool = True) -> str:
    """OFFSET  TIME  CATEGORY  SIZE  PREVIEW: what filelog-dump prints for one record."""
    line = f"{record.offset:>10}  {format_time(record.timestamp)}  {printable(record.category):<10}  {record.size:>6}"
    return f"{line}  {payload_preview(record.payload)}" if preview else line


def dump_full(record: Record) -> str:
    """The dump line followed by the whole payload, indented (a hex dump for binary payloads)."""
    text = _as_text(record.payload)
    if text is not None:
        body = printable(text, keep="\n\t").splitlines() or [""]
    else:
        body = [
            f"{i:08x}  {record.payload[i : i + 16].hex(' '):<47}  "
            + "".join(chr(b) if 32 <= b < 127 else "." for b in record.payload[i : i + 16])
            for i in range(0, len(record.payload), 16)
        ]
    return "\n".join([dump_line(record, preview=False), *("    " + line for line in body)])


def record_json(record: Record) -> dict[str, Any]:
    """The --json object: the payload as text, or as base64 when it is not UTF-8 (payload_encoding says)."""
    text = _decoded(record.payload)
    return {
        "offset": record.offset,
        "next_offset": record.next_offset,
        "time": format_time(record.timestamp, "microseconds"),
        "timestamp": record.timestamp,
        "category": record.category,
        "size": record.size,
        "payload_size": len(record.payload),
        "payload_encoding": "utf-8" if text is not None else "base64",
        "payload": text if text is not None else base64.b64encode(record.payload).decode("ascii"),
    }


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table_lines(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
