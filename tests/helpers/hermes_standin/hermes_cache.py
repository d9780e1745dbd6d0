"""A hermes-client's cache file, written and read the way hermes-client does (our own code).

`<hermes.cache.dirpath>/_<appname>.json`, or `.json.gz` with `hermes.cache.enable_compression`:
`{"__HERMES_VERSION__": ..., "content": {...}}`, written to a temporary file then renamed over
the cache, with mode `0666 & ~umask`. `content` holds the three bus offsets among the client's
other entries (stand-ins here: a trash bin and an error queue, which a migration must keep).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

HERMES_VERSION = "1.0.9"
OFFSETS = ("initstartoffset", "initstopoffset", "nextoffset")


def cache_path(dirpath: Path, appname: str, *, compressed: bool) -> Path:
    return dirpath / f"_{appname}.json{'.gz' if compressed else ''}"


def new_content(**offsets: int | None) -> dict[str, Any]:
    """A client's cache content: its three offsets (null until set) and other entries."""
    content: dict[str, Any] = dict.fromkeys(OFFSETS)
    content.update(offsets)
    content["trashbin"] = {"Users": {"carol": "2026-01-01T00:00:00"}}
    content["errorqueue"] = []
    return content


def save(path: Path, content: dict[str, Any], umask: int = 0o027) -> None:
    """Write the cache as hermes-client does: whole file, temporary name, then rename."""
    text = json.dumps({"__HERMES_VERSION__": HERMES_VERSION, "content": content}, indent=4)
    temporary = path.with_name(path.name + ".tmp")
    if path.name.endswith(".gz"):
        with gzip.open(temporary, "wt", encoding="utf-8") as file:
            file.write(text)
    else:
        temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def load(path: Path) -> dict[str, Any]:
    """The content of a cache file (gzipped or not, by its name as hermes-client does)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as file:  # type: ignore[operator]
        return json.load(file)["content"]
