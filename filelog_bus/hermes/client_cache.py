"""hermes-client cache files: finding them, reading their bus offsets, and rewriting those offsets.

The bus keeps no record of its readers: each hermes-client keeps its position in its own
cache file, `<hermes.cache.dirpath>/_<appname>.json` (or `.json.gz` with
`hermes.cache.enable_compression`), a JSON object `{"__HERMES_VERSION__": ..., "content":
{...}}` whose `content` holds `initstartoffset`, `initstopoffset` and `nextoffset`. Reading
them is how `filelog-bus clients` and retention know who has read what. Rewriting them
(`--set-offsets`) replaces the hand-written snippet a migration used to need.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from filelog_bus import fs
from filelog_bus.compat import StrEnum
from filelog_bus.errors import ClientCacheError, ClientRunningError

OFFSET_KEYS = ("initstartoffset", "initstopoffset", "nextoffset")
_SUFFIXES = (".json.gz", ".json")
#: A cache file is a few KiB to a few MiB; refuse to decompress a file into more than this.
_MAX_CACHE_BYTES = 512 * 2**20


#: A client's three offsets, by cache entry (OFFSET_KEYS); None: unset.
Offsets = dict[str, int | None]


class Initialisation(StrEnum):
    """How far a client is through the initsync sequence, as `filelog-bus clients` shows it."""

    DONE = "yes"
    #: Reading the sequence: its end is known, and the client has not reached it.
    IN_PROGRESS = "in progress"
    NOT_STARTED = "no"


def initialised(start: int | None, stop: int | None, next_: int | None) -> bool:
    """Hermes's own test of a client's three offsets: all set, and the initsync sequence read to its end."""
    return start is not None and stop is not None and next_ is not None and next_ >= stop


@dataclass(frozen=True)
class ClientCache:
    """The bus position a hermes-client keeps in its cache file."""

    path: str
    appname: str
    hermes_version: str | None
    initstartoffset: int | None
    initstopoffset: int | None
    nextoffset: int | None

    @property
    def offsets(self) -> Offsets:
        """The three offsets, by cache entry (OFFSET_KEYS)."""
        return {key: getattr(self, key) for key in OFFSET_KEYS}

    @property
    def initialised(self) -> bool:
        return initialised(self.initstartoffset, self.initstopoffset, self.nextoffset)

    @property
    def initialisation(self) -> Initialisation:
        """How far the client is through its initsync sequence."""
        if self.initialised:
            return Initialisation.DONE
        if self.initstopoffset is not None and self.nextoffset is not None:
            return Initialisation.IN_PROGRESS
        return Initialisation.NOT_STARTED

    @property
    def compressed(self) -> bool:
        return self.path.endswith(".gz")


def appname_of(path: str) -> str:
    """`hermes-client-ldap` for `.../_hermes-client-ldap.json.gz`; the file name itself otherwise."""
    name = os.path.basename(path)
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[1:] if name.startswith("_") and len(name) > 1 else name


def load_document(path: str) -> dict[str, Any]:
    """The JSON object of a cache file, gzipped or not (told apart by content, not by name)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(_MAX_CACHE_BYTES + 1)
    except IsADirectoryError:
        raise ClientCacheError(f"{path} is a directory, not a cache file", path=path) from None
    except FileNotFoundError:
        raise ClientCacheError(
            f"no hermes-client cache file {path}: it does not exist; check the path (the client's "
            "hermes.cache.dirpath, then _<appname>.json or .json.gz)",
            path=path,
        ) from None
    except OSError as exc:
        raise ClientCacheError(
            f"cannot read the hermes-client cache file {path}: {exc.strerror or exc}; run this as a user "
            "that may read the client's cache directory (e.g. the client's user, or one in its group)",
            path=path,
        ) from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unzipped:
                raw = unzipped.read(_MAX_CACHE_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ClientCacheError(
                f"the hermes-client cache file {path} is damaged: its gzip stream is cut or corrupt ({exc}); "
                "restore it from a backup, or re-initialise the client",
                path=path,
            ) from exc
    if len(raw) > _MAX_CACHE_BYTES:
        raise ClientCacheError(f"{path} is bigger than any hermes-client cache file: not one", path=path)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ClientCacheError(
            f"the hermes-client cache file {path} is damaged or not JSON ({exc}); restore it from a backup, "
            "or re-initialise the client",
            path=path,
        ) from exc
    if not isinstance(document, dict):
        raise ClientCacheError(f"{path} holds JSON but not a hermes-client cache (not an object)", path=path)
    return document


def parse_cache(path: str, document: dict[str, Any]) -> ClientCache:
    """The offsets of a hermes-client cache document; ClientCacheError if it is not one."""
    content = document.get("content")
    if "__HERMES_VERSION__" not in document or not isinstance(content, dict):
        raise ClientCacheError(
            f'{path} is not a hermes-client cache file: it has no "__HERMES_VERSION__" and "content" '
            "(give the file <hermes.cache.dirpath>/_<appname>.json or .json.gz, or that directory)",
            path=path,
        )
    missing = [key for key in OFFSET_KEYS if key not in content]
    if missing:
        raise ClientCacheError(
            f"{path} is a Hermes cache file but not a hermes-client's: its content has no "
            f"{', '.join(missing)} (hermes-server's own cache keeps no bus offsets)",
            path=path,
        )
    offsets = {}
    for key in OFFSET_KEYS:
        value = content[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ClientCacheError(
                f"{path}: {key} is {value!r}, not a filelog-bus offset (an integer >= 0, or null): this "
                "client's offsets come from another kind of bus; set them with --set-offsets",
                path=path,
            )
        offsets[key] = value
    version = document["__HERMES_VERSION__"]
    return ClientCache(path, appname_of(path), None if version is None else str(version), **offsets)


def read_cache(path: str) -> ClientCache:
    return parse_cache(path, load_document(path))


def _candidates(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ClientCacheError(
            f"cannot list the cache directory {directory}: {exc.strerror or exc}", path=directory
        ) from exc
    return [os.path.join(directory, n) for n in names if n.startswith("_") and n.endswith(_SUFFIXES)]


@dataclass(frozen=True)
class Found:
    """The clients named by CACHE arguments, the files that failed, and notes about skipped files."""

    clients: list[ClientCache]
    errors: list[ClientCacheError]
    notes: list[str]


def find_clients(arguments: Iterable[str]) -> Found:
    """Read the clients' caches named by files or cache directories.

    In a directory, `_*.json` and `_*.json.gz` files that are Hermes caches without bus offsets
    (hermes-server's) are skipped; when a client has both a `.json` and a `.json.gz` (compression
    was switched), the newer one is the client's and the other is noted as stale.
    """
    clients: dict[str, ClientCache] = {}
    errors: list[ClientCacheError] = []
    notes: list[str] = []
    for argument in arguments:
        if not os.path.isdir(argument):
            try:
                client = read_cache(argument)
            except ClientCacheError as exc:
                errors.append(exc)
                continue
            clients.setdefault(os.path.abspath(argument), client)
            continue
        try:
            paths = _candidates(argument)
        except ClientCacheError as exc:
            errors.append(exc)
            continue
        found = 0
        for path in paths:
            try:
                document = load_document(path)
            except ClientCacheError as exc:
                errors.append(exc)
                continue
            if not isinstance(document.get("content"), dict) or not all(
                key in document["content"] for key in OFFSET_KEYS
            ):
                continue  # another Hermes cache file: not a client's position
            try:
                clients.setdefault(os.path.abspath(path), parse_cache(path, document))
                found += 1
            except ClientCacheError as exc:
                errors.append(exc)
        if not found and not any(error.path.startswith(argument) for error in errors):
            errors.append(
                ClientCacheError(
                    f"no hermes-client cache file in {argument}: a client keeps its offsets in "
                    "_<appname>.json (or .json.gz); give its hermes.cache.dirpath",
                    path=argument,
                )
            )
    return Found(_drop_stale(list(clients.values()), notes), errors, notes)


def _drop_stale(clients: list[ClientCache], notes: list[str]) -> list[ClientCache]:
    """One cache per client: the newest of a `.json` and a `.json.gz` left by a compression switch."""
    by_name: dict[tuple[str, str], list[ClientCache]] = {}
    for client in clients:
        by_name.setdefault((os.path.dirname(os.path.abspath(client.path)), client.appname), []).append(client)
    kept = []
    for twins in by_name.values():
        twins.sort(key=lambda c: _mtime(c.path), reverse=True)
        kept.append(twins[0])
        notes += [
            f"{stale.path} is ignored: {twins[0].path} is newer (hermes.cache.enable_compression was "
            "switched); delete the stale one"
            for stale in twins[1:]
        ]
    kept.sort(key=lambda c: (c.appname, c.path))
    return kept


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


# -- rewriting the offsets ----------------------------------------------------------------------


def running_clients(cache: ClientCache) -> list[str]:
    """Processes that look like the client of this cache: their command line names its appname
    (or the appname without its `hermes-` prefix).

    Hermes takes no lock on its cache, so this is the best sign a stopped client's file is safe
    to rewrite. Linux only (/proc); elsewhere it finds nothing.
    """
    mine = {os.getpid(), os.getppid()}
    # hermes-client-ldap may run as `hermes.py client-ldap`: look for both.
    names = {name for name in (cache.appname, cache.appname.removeprefix("hermes-")) if len(name) > 3}
    found: list[str] = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                words = file.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        command = " ".join(word for word in words if word)
        if any(name in command for name in names) and "filelog-bus" not in command:
            found.append(f"pid {pid}: {command[:200]}")
    return found


def refuse_if_running(cache: ClientCache) -> None:
    """ClientRunningError when the client of ``cache`` seems to be running."""
    running = running_clients(cache)
    if running:
        raise ClientRunningError(
            f"the client {cache.appname} seems to be running ({'; '.join(running)}): it rewrites "
            f"{cache.path} at the end of each update loop, which would undo this. Stop it, then retry "
            "(or give --force if that process is not the client)"
        )


def backup_name(path: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    candidate = f"{path}.bak-{stamp}"
    number = 1
    while os.path.exists(candidate):
        number += 1
        candidate = f"{path}.bak-{stamp}-{number}"
    return candidate


def set_offsets(cache: ClientCache, offsets: Mapping[str, int | None], *, check_running: bool = True) -> str:
    """Set the offsets of a stopped client's cache (`offsets`: entry -> value, among OFFSET_KEYS);
    return the backup's path.

    The file is rewritten as Hermes writes it (same compression, a temporary file renamed over
    it, same mode and owner), after a byte-for-byte backup. Every other cache entry is kept.
    Refuses (ClientRunningError) when the client seems to be running, or when the file changes
    while this runs.
    """
    if check_running:
        refuse_if_running(cache)
    before = _stat(cache.path)
    document = load_document(cache.path)
    parse_cache(cache.path, document)
    document["content"].update(offsets)
    backup = backup_name(cache.path)
    shutil.copy2(cache.path, backup)
    text = json.dumps(document, indent=4, ensure_ascii=False).encode("utf-8")
    directory = os.path.dirname(os.path.abspath(cache.path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(cache.path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if cache.compressed:
                with gzip.GzipFile(fileobj=file, mode="wb", mtime=0) as zipped:
                    zipped.write(text)
            else:
                file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, before.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):
            os.chown(temporary, before.st_uid, before.st_gid)  # run as root: keep it the client's file
        if _stat(cache.path) != before:
            raise ClientRunningError(
                f"{cache.path} changed while its offsets were being set: a client is running on it. Nothing "
                f"was changed (a backup was kept as {backup}); stop the client, then retry"
            )
        os.replace(temporary, cache.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename is done; its durability is best effort here
        fs.fsync_directory(directory)
    return backup


def _stat(path: str) -> os.stat_result:
    status = os.stat(path)
    # st_atime changes on reads: compare what a writer changes.
    return os.stat_result((*status[:7], 0, *status[8:10]))


def describe(values: Sequence[int | None]) -> str:
    return ", ".join(
        f"{key} {'null' if value is None else value}" for key, value in zip(OFFSET_KEYS, values, strict=True)
    )
