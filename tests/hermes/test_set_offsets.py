"""`filelog-bus clients --set-offsets` for migrations, then a hermes-client stand-in resuming.

The client processes are tests/helpers/hermes_standin/fake_client.py (the consumer plugin driven as
hermes-client drives it, saving its cache as hermes-client does); the server is fake_server.py.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers.cli import bus
from helpers.clients import (
    aged_times,
    by_client,
    clients_json,
    events_bus,
    hermes_cache,
    write_cache,
)
from helpers.hermes import finish, handled_events, keys_of, run_standin, start_standin

from filelog_bus import LogReader


def backups(cache: Path) -> list[Path]:
    return sorted(cache.parent.glob(cache.name + ".bak-*"))


@pytest.mark.parametrize("compressed", [True, False])
def test_from_the_sqlite_bus_set_offsets_start_then_the_client_reads_only_new_base_events(
    tmp_path: Path, compressed: bool
) -> None:
    """The README's migration: offsets of the SQLite bus (row numbers), a bus not created yet."""
    bus_dir, caches = tmp_path / "bus", tmp_path / "cache"
    cache = write_cache(
        caches,
        "hermes-client-ldap",
        compressed=compressed,
        nextoffset=1600,
        initstartoffset=1200,
        initstopoffset=1500,
    )
    cache.chmod(0o640)
    original = cache.read_bytes()

    result = bus("clients", bus_dir, caches, "--set-offsets", "start")

    assert result.returncode == 0, result.stderr
    assert f"note: {bus_dir} holds no bus yet: a new bus starts at offset 0" in result.stdout
    [backup] = backups(cache)
    assert backup.read_bytes() == original
    assert (
        f"was initstartoffset 1200, initstopoffset 1500, nextoffset 1600; now all three 0; backup {backup}"
        in result.stdout
    )
    content = hermes_cache.load(cache)  # still readable as hermes-client reads it (gzip by name)
    assert (content["initstartoffset"], content["initstopoffset"], content["nextoffset"]) == (0, 0, 0)
    assert content["trashbin"] == hermes_cache.new_content()["trashbin"]  # the rest is kept
    assert (cache.read_bytes()[:2] == b"\x1f\x8b") is compressed
    assert oct(cache.stat().st_mode & 0o777) == "0o640"
    assert not bus_dir.exists(), "setting offsets must not create the bus"

    client = start_standin("fake_client.py", bus_dir, cache, "--stop-at", "base-9")
    server_status, _, server_err = run_standin(
        "fake_server.py", bus_dir, "--initsync", 3, "--base", 10, "--loops", 2
    )
    client_status, client_out, client_err = finish(client)
    assert (server_status, client_status) == (0, 0), (server_err, client_err)
    # Initialised: the fresh initsync sequence is skipped; no base event is missed.
    assert keys_of(handled_events(client_out)) == [("base", "added", f"base-{i}") for i in range(10)]


def test_set_offsets_end_makes_a_client_start_with_the_next_event(tmp_path: Path) -> None:
    bus_dir = tmp_path / "bus"
    events_bus(bus_dir, aged_times((12, 3600)), prefix="old-")
    cache = write_cache(tmp_path / "cache", "hermes-client-x", compressed=True, nextoffset=None)

    result = bus("clients", bus_dir, cache, "--set-offsets", "end")
    status, report = clients_json(bus_dir, cache)

    assert result.returncode == 0, result.stderr
    with LogReader(bus_dir) as reader:
        end = reader.end_offset
    client_row = by_client(report)["hermes-client-x"]
    assert (client_row["nextoffset"], client_row["unread_events"], client_row["initialised"]) == (
        end,
        0,
        True,
    )
    assert status == 0
    server_status, _, server_err = run_standin(
        "fake_server.py", bus_dir, "--initsync", 0, "--base", 3, "--loops", 1
    )
    assert server_status == 0, server_err
    client_status, client_out, client_err = run_standin(
        "fake_client.py", bus_dir, cache, "--stop-at", "base-2"
    )
    assert client_status == 0, client_err
    assert keys_of(handled_events(client_out)) == [("base", "added", f"base-{i}") for i in range(3)]


def test_to_kafka_a_drained_client_gets_the_new_topics_first_offset(tmp_path: Path) -> None:
    """filelog -> Kafka: checked drained with `clients`, then offsets set for a new topic (0)."""
    bus_dir = tmp_path / "bus"
    records = events_bus(bus_dir, aged_times((30, 600)))
    cache = write_cache(
        tmp_path / "cache", "hermes-client-x", compressed=True, nextoffset=records[-1].offset + 1
    )

    _, drained = clients_json(bus_dir, cache)
    to_new_topic = bus("clients", bus_dir, cache, "--set-offsets", 0)
    beyond = bus("clients", bus_dir, cache, "--set-offsets", 10**9)

    assert by_client(drained)["hermes-client-x"]["unread_events"] == 0
    assert to_new_topic.returncode == 0 and "note:" not in to_new_topic.stdout
    assert beyond.returncode == 0
    assert f"offset {10**9} is not on {bus_dir}" in beyond.stdout and "written as given" in beyond.stdout
    content = json.loads(gzip.decompress(cache.read_bytes()))
    assert content["__HERMES_VERSION__"] == hermes_cache.HERMES_VERSION
    assert [content["content"][k] for k in hermes_cache.OFFSETS] == [10**9] * 3
    first, second = backups(cache)
    saved = [json.loads(gzip.decompress(b.read_bytes()))["content"]["nextoffset"] for b in (first, second)]
    assert saved == [records[-1].offset + 1, 0]  # each change kept the file as it was before it


def test_set_offsets_refuses_while_the_client_runs_and_works_once_it_is_stopped(tmp_path: Path) -> None:
    bus_dir = tmp_path / "bus"
    events_bus(bus_dir, aged_times((5, 600)))
    cache = write_cache(tmp_path / "cache", "hermes-client-busy", compressed=False, nextoffset=0)
    # named first, so that a check made only when its turn comes would rewrite it before refusing
    stopped = write_cache(tmp_path / "a-cache", "hermes-client-alpha", compressed=False, nextoffset=1)
    client = start_standin(
        "fake_client.py", bus_dir, cache, "--timeout-ms", 100, "--stop-at", "never", "--max-loops", 600
    )
    try:
        assert client.stdout is not None
        client.stdout.readline()  # it has handled an event: it runs, as itself

        refused = bus("clients", bus_dir, stopped, cache, "--set-offsets", "start")

        assert refused.returncode == 6, refused.stderr
        assert backups(stopped) == []  # every client is checked before any file is written
        assert refused.stderr.startswith(
            "filelog-bus clients: error: the client hermes-client-busy seems to be running (pid "
        )
        assert f"pid {client.pid}: " in refused.stderr and "Stop it, then retry" in refused.stderr
        assert backups(cache) == []
    finally:
        client.kill()
        client.communicate()
    assert bus("clients", bus_dir, cache, "--set-offsets", "start").returncode == 0
    assert len(backups(cache)) == 1
