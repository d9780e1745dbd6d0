"""The Hermes plugins driven by separate server and client processes, as Hermes runs them.

The processes are tests/helpers/hermes_standin/fake_server.py and fake_client.py, which use the
plugins through the stand-in of Hermes's base classes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from helpers.hermes import (
    PROCESS_TIMEOUT,
    finish,
    handled_events,
    keys_of,
    run_standin,
    standin_env,
    start_standin,
)
from helpers.processes import STANDIN_DIR

from filelog_bus import LogWriter

sys.path.insert(0, str(STANDIN_DIR))
from hermes_cache import load as load_cache
from hermes_cache import new_content
from hermes_cache import save as save_cache


def expected_keys(initsync: int, base: int) -> list[tuple[str, str, str | None]]:
    """(category, type, objpkey) of everything a client should handle, in order."""
    keys: list[tuple[str, str, str | None]] = [("initsync", "init-start", None)]
    keys += [("initsync", "added", f"init-{i}") for i in range(initsync)]
    keys.append(("initsync", "init-stop", None))
    keys += [("base", "added", f"base-{i}") for i in range(base)]
    return keys


def test_client_started_before_the_bus_exists_gets_initsync_then_base_events(tmp_path: Path) -> None:
    bus, cache = tmp_path / "bus", tmp_path / "_hermes-client-standin.json"
    client = start_standin("fake_client.py", bus, cache, "--timeout-ms", 100, "--stop-at", "base-29")
    server_status, _, server_err = run_standin(
        "fake_server.py", bus, "--initsync", 5, "--base", 30, "--loops", 3
    )
    client_status, client_out, client_err = finish(client)

    assert server_status == 0, server_err
    assert client_status == 0, client_err
    events = handled_events(client_out)
    assert keys_of(events) == expected_keys(5, 30)
    offsets = [e["offset"] for e in events]
    assert all(e["offset_type"] == "int" for e in events)
    assert offsets == sorted(set(offsets)), "offsets must strictly increase along the bus"
    assert all(e["timestamp_is_naive"] for e in events)
    saved = load_cache(cache)
    assert saved["nextoffset"] == offsets[-1] + 1
    assert saved["initstartoffset"] == offsets[0]
    assert saved["initstopoffset"] == offsets[6]


def test_client_restarted_mid_stream_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    bus, cache = tmp_path / "bus", tmp_path / "_hermes-client-standin.json"
    server = start_standin("fake_server.py", bus, "--initsync", 4, "--base", 60, "--loops", 6)
    first_status, first_out, first_err = run_standin("fake_client.py", bus, cache, "--stop-after", 20)
    second_status, second_out, second_err = run_standin("fake_client.py", bus, cache, "--stop-at", "base-59")
    server_status, _, server_err = finish(server)

    assert (server_status, first_status, second_status) == (0, 0, 0), (server_err, first_err, second_err)
    first, second = handled_events(first_out), handled_events(second_out)
    assert len(first) == 20
    assert keys_of(first + second) == expected_keys(4, 60)
    assert second[0]["offset"] > first[-1]["offset"]


def test_category_lookup_across_processes_finds_the_initsync_start(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    status, _, err = run_standin("fake_server.py", bus, "--initsync", 2, "--base", 40, "--loops", 1)
    assert status == 0, err
    # A lone initsync sequence after many base events: findNextEventOfCategory jumps to it.
    status, _, err = run_standin("fake_server.py", bus, "--initsync", 0, "--base", 0, "--loops", 1)
    assert status == 0, err
    script = (
        "import json, sys\n"
        "from hermes_consumer_plugin import FilelogConsumerPlugin\n"
        "bus = FilelogConsumerPlugin({'path': sys.argv[1]})\n"
        "bus.setTimeout(0)\n"
        "with bus:\n"
        "    bus.seekToBeginning()\n"
        "    starts = []\n"
        "    while (event := bus.findNextEventOfCategory('initsync')) is not None:\n"
        "        starts.append([event.offset, event.eventtype])\n"
        "    missing = bus.findNextEventOfCategory('no-such-category')\n"
        "print(json.dumps({'found': starts, 'missing': missing}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bus)],
        env=standin_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [eventtype for _, eventtype in answer["found"]] == [
        "init-start",
        "added",
        "added",
        "init-stop",
        "init-start",
        "init-stop",
    ]
    assert answer["missing"] is None


def test_second_server_is_refused_with_a_clear_message_while_the_first_holds_the_bus(tmp_path: Path) -> None:
    bus, hold = tmp_path / "bus", tmp_path / "first-server-holds-the-bus"
    first = start_standin("fake_server.py", bus, "--base", 5, "--loops", 1, "--hold-file", hold)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not hold.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "first server never opened the bus"
        time.sleep(0.01)

    second_status, _, second_err = run_standin("fake_server.py", bus, "--base", 5, "--loops", 1)
    hold.unlink()
    first_status, _, first_err = finish(first)

    assert first_status == 0, first_err
    assert second_status == 1
    assert second_err.startswith("BusLockedError: hermes-server cannot open the filelog bus")
    assert "only one hermes-server may produce on a bus" in second_err.lower()
    assert str(bus) in second_err
    # Once the first server has closed the bus, another server may write to it.
    assert run_standin("fake_server.py", bus, "--initsync", 0, "--base", 1, "--loops", 1)[0] == 0


def test_client_with_offsets_reset_for_a_new_bus_reads_only_base_events_from_its_start(
    tmp_path: Path,
) -> None:
    """The README's migration recipe: an initialised client whose three cached offsets are set to 0."""
    bus, cache = tmp_path / "bus", tmp_path / "_hermes-client-standin.json"
    save_cache(cache, new_content(initstartoffset=0, initstopoffset=0, nextoffset=0))
    client = start_standin("fake_client.py", bus, cache, "--stop-at", "base-9")
    server_status, _, server_err = run_standin(
        "fake_server.py", bus, "--initsync", 3, "--base", 10, "--loops", 2
    )
    client_status, client_out, client_err = finish(client)

    assert (server_status, client_status) == (0, 0), (server_err, client_err)
    # The fresh initsync sequence is skipped (the client already holds that data); no base event is missed.
    assert keys_of(handled_events(client_out)) == [("base", "added", f"base-{i}") for i in range(10)]


def test_event_timestamps_are_naive_local_time_as_hermes_plugins_give_them(tmp_path: Path) -> None:
    """Under TZ=Europe/Paris (UTC+1 in winter, UTC+2 in summer) a client sees Paris wall-clock times,
    which hermes-client compares with datetime.now() to purge its trash bin."""
    bus, cache = tmp_path / "bus", tmp_path / "_hermes-client-paris.json"
    winter, summer = 1_705_320_000.0, 1_721_044_800.0  # 2024-01-15T12:00Z, 2024-07-15T12:00Z
    with LogWriter(bus) as writer:
        for key, moment in (("winter", winter), ("summer", summer)):
            event = {
                "evcategory": "base",
                "eventtype": "added",
                "objtype": "user",
                "objpkey": key,
                "objattrs": {},
            }
            writer.append("base", json.dumps(event, indent=4).encode("utf-8"), moment)
    save_cache(cache, new_content(initstartoffset=0, initstopoffset=0, nextoffset=0))

    client = subprocess.Popen(
        [sys.executable, str(STANDIN_DIR / "fake_client.py"), str(bus), str(cache), "--stop-at", "summer"],
        env={**standin_env(), "TZ": "Europe/Paris"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status, out, err = finish(client)

    assert status == 0, err
    events = handled_events(out)
    assert [(e["objpkey"], e["timestamp"]) for e in events] == [
        ("winter", "2024-01-15T13:00:00"),
        ("summer", "2024-07-15T14:00:00"),
    ]
    assert all(e["timestamp_is_naive"] for e in events)
