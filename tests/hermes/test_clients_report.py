"""`filelog-bus clients`, run as the installed command, on real buses and real hermes-client caches.

Caches are written by the Hermes stand-in the way hermes-client writes them (plain JSON and
gzipped); clients are ahead, behind, expired, at risk or keeping up.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest
from helpers.bus import DAY, SMALL, content_snapshot
from helpers.cli import bus
from helpers.clients import aged_times, by_client, clients_json, events_bus, hermes_cache, unread, write_cache
from prometheus_client.parser import text_string_to_metric_families

from filelog_bus import LogWriter, Record


def five_clients(tmp_path: Path) -> tuple[Path, list[Record], dict[str, Path], list[Path]]:
    """A bus whose oldest segment retention already deleted, and one client in each state.

    Events: 10 twenty days old (retention at 15 days deleted their first segments), 15 ten days
    old, 15 an hour old. Caches: gzipped in one directory (with hermes-server's own cache,
    which has no offsets), plain in another, one given as a file.
    """
    bus_dir = tmp_path / "bus"
    records = events_bus(bus_dir, aged_times((10, 20 * DAY), (15, 10 * DAY), (15, 3600)))
    with LogWriter(bus_dir, **SMALL) as writer:
        assert writer.apply_retention(max_age_days=15), "the test needs a deleted segment"
        begin, end = writer.begin_offset, writer.end_offset
    assert records[0].offset < begin <= records[10].offset
    gz, plain = tmp_path / "cache-gz", tmp_path / "cache-plain"
    caches = {
        "hermes-client-expired": write_cache(gz, "hermes-client-expired", compressed=True, nextoffset=1),
        "hermes-client-atrisk": write_cache(
            gz, "hermes-client-atrisk", compressed=True, nextoffset=records[12].offset + 1
        ),
        "hermes-client-behind": write_cache(
            plain, "hermes-client-behind", compressed=False, nextoffset=records[30].offset + 1
        ),
        "hermes-client-ok": write_cache(plain, "hermes-client-ok", compressed=False, nextoffset=end),
        "hermes-client-ahead": write_cache(
            tmp_path / "elsewhere", "hermes-client-ahead", compressed=False, nextoffset=end + 500
        ),
    }
    hermes_cache.save(gz / "_hermes-server.json", {"datasources": {}})  # skipped: no bus offsets
    return bus_dir, records, caches, [gz, plain, caches["hermes-client-ahead"]]


def test_each_client_gets_its_position_unread_events_and_state(tmp_path: Path) -> None:
    bus_dir, records, caches, arguments = five_clients(tmp_path)
    before = content_snapshot(bus_dir), {name: path.read_bytes() for name, path in caches.items()}

    status, report = clients_json(bus_dir, *arguments, "--days", 5)
    table = bus("clients", bus_dir, *arguments, "--days", 5)

    assert status == 1  # not every client is ok
    clients = by_client(report)
    assert {name: c["state"] for name, c in clients.items()} == {
        "hermes-client-expired": "expired",
        "hermes-client-atrisk": "at risk",
        "hermes-client-behind": "behind",
        "hermes-client-ok": "ok",
        "hermes-client-ahead": "ahead",
    }
    for name in ("hermes-client-atrisk", "hermes-client-behind", "hermes-client-ok"):
        events, size, oldest = unread(records, clients[name]["nextoffset"])
        assert (clients[name]["unread_events"], clients[name]["unread_bytes"]) == (events, size), name
        assert clients[name]["oldest_unread_time"] == oldest, name
    assert clients["hermes-client-ok"]["unread_events"] == 0
    assert clients["hermes-client-expired"]["unread_events"] is None
    assert clients["hermes-client-atrisk"]["cache"].endswith("_hermes-client-atrisk.json.gz")
    assert all(c["initialised"] is True for c in clients.values())
    assert report["next_retention_begin_offset"] > clients["hermes-client-atrisk"]["nextoffset"]
    assert "re-initialise it" in clients["hermes-client-expired"]["why"]

    assert table.returncode == 1 and table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[1].split() == [
        "CLIENT",
        "NEXT",
        "OFFSET",
        "UNREAD",
        "BYTES",
        "OLDEST",
        "UNREAD",
        "INITIALISED",
        "STATE",
    ]
    rows = {line.split()[0]: line for line in lines[2:7]}
    assert set(rows) == set(caches)
    assert rows["hermes-client-atrisk"].endswith("yes          at risk")
    assert lines[-1] == "result: 1 ok, 1 behind, 1 at risk, 1 expired, 1 ahead"
    # Read-only: neither the bus nor a cache changed.
    assert (content_snapshot(bus_dir), {name: path.read_bytes() for name, path in caches.items()}) == before


def test_sparing_retention_keeps_a_stopped_client_out_of_risk(tmp_path: Path) -> None:
    bus_dir, _, _, arguments = five_clients(tmp_path)

    _, report = clients_json(bus_dir, *arguments, "--days", 5, "--sparing")

    clients = by_client(report)
    assert clients["hermes-client-atrisk"]["state"] == "behind"  # ten-day-old unread events, kept
    assert report["next_retention_begin_offset"] <= clients["hermes-client-atrisk"]["nextoffset"]
    assert clients["hermes-client-expired"]["state"] == "expired"  # it holds nothing back


def test_behind_thresholds_and_an_uninitialised_client(tmp_path: Path) -> None:
    bus_dir = tmp_path / "bus"
    records = events_bus(bus_dir, aged_times((20, 600)))
    caches = tmp_path / "cache"
    write_cache(caches, "hermes-client-a", compressed=True, nextoffset=records[5].offset + 1)
    write_cache(
        caches,
        "hermes-client-new",
        compressed=False,
        nextoffset=None,
        initstartoffset=None,
        initstopoffset=None,
    )

    default_status, default = clients_json(bus_dir, caches)  # oldest unread 10 min old: under 15m
    by_age_status, by_age = clients_json(bus_dir, caches, "--behind-age", "5m")
    by_count_status, by_count = clients_json(bus_dir, caches, "--behind-events", 10)

    assert default_status == 0 and {c["state"] for c in default["clients"]} == {"ok"}
    new = by_client(default)["hermes-client-new"]
    assert (new["initialised"], new["nextoffset"], new["unread_events"]) == (False, None, None)
    assert by_age_status == 1 and by_client(by_age)["hermes-client-a"]["state"] == "behind"
    assert by_count_status == 1 and by_client(by_count)["hermes-client-a"]["state"] == "behind"
    assert by_client(by_count)["hermes-client-a"]["unread_events"] == 14


def test_nagios_statuses_follow_the_nagios_convention(tmp_path: Path) -> None:
    bus_dir, _, caches, arguments = five_clients(tmp_path)

    critical = bus("clients", bus_dir, *arguments, "--nagios")
    warning = bus("clients", bus_dir, caches["hermes-client-ok"], caches["hermes-client-behind"], "--nagios")
    ok = bus("clients", bus_dir, caches["hermes-client-ok"], "--nagios")
    unknown = bus("clients", tmp_path / "no-bus", caches["hermes-client-ok"], "--nagios")

    assert critical.returncode == 2 and critical.stdout.startswith("FILELOG CLIENTS CRITICAL - ")
    assert "hermes-client-expired expired" in critical.stdout
    assert warning.returncode == 1 and warning.stdout.startswith(
        "FILELOG CLIENTS WARNING - hermes-client-behind behind"
    )
    assert "'hermes-client-behind_unread'=9;;;0" in warning.stdout  # performance data
    assert ok.returncode == 0 and ok.stdout.startswith("FILELOG CLIENTS OK - 1 clients ok")
    assert unknown.returncode == 3 and unknown.stdout.startswith("FILELOG CLIENTS UNKNOWN - no bus at")
    assert len(critical.stdout.splitlines()) == 1


def test_prometheus_textfile_parses_back_to_the_json_numbers(tmp_path: Path) -> None:
    bus_dir, _, _, arguments = five_clients(tmp_path)
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    target = textfile_dir / "filelog.prom"

    written = bus("clients", bus_dir, *arguments, "--prometheus", target)
    _, report = clients_json(bus_dir, *arguments)

    assert written.returncode == 1 and written.stdout == "" and written.stderr == ""
    assert os.listdir(textfile_dir) == ["filelog.prom"]  # no temporary file left behind
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    samples: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(target.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            key = (sample.name, sample.labels.get("client", ""), sample.labels.get("state", ""))
            samples[key] = sample.value
    assert samples[("filelog_bus_bus_end_offset", "", "")] == report["end_offset"]
    assert samples[("filelog_bus_bus_begin_offset", "", "")] == report["begin_offset"]
    for client in report["clients"]:
        name = client["client"]
        assert samples[("filelog_bus_client_next_offset", name, "")] == client["nextoffset"]
        if client["unread_events"] is not None:
            assert samples[("filelog_bus_client_unread_events", name, "")] == client["unread_events"]
            assert samples[("filelog_bus_client_unread_bytes", name, "")] == client["unread_bytes"]
        states = {
            state
            for (metric, who, state), value in samples.items()
            if metric == "filelog_bus_client_state" and who == name and value == 1
        }
        assert states == {client["state"]}
    assert samples[("filelog_bus_client_lag_seconds", "hermes-client-ok", "")] == 0


def test_unreadable_foreign_and_damaged_caches_get_a_clear_message_never_a_traceback(tmp_path: Path) -> None:
    bus_dir = tmp_path / "bus"
    records = events_bus(bus_dir, aged_times((5, 60)))
    caches = tmp_path / "cache"
    good = write_cache(caches, "hermes-client-good", compressed=True, nextoffset=records[2].offset + 1)
    (caches / "_hermes-client-cut.json").write_text('{"__HERMES_VERSION__": "1.0.9", "content": {"nexto')
    whole = gzip.compress(b'{"__HERMES_VERSION__": "1.0.9", "content": {}}' * 50)
    (caches / "_hermes-client-truncated.json.gz").write_bytes(whole[: len(whole) // 2])
    foreign = tmp_path / "settings.json"
    foreign.write_text('{"hermes": {"umask": "0027"}}')
    sqlite_offsets = tmp_path / "_hermes-client-kafka.json"
    hermes_cache.save(
        sqlite_offsets, hermes_cache.new_content(initstartoffset="0", initstopoffset="9", nextoffset="10")
    )
    missing = tmp_path / "_hermes-client-gone.json"
    before = content_snapshot(caches), content_snapshot(bus_dir)

    result = bus("clients", bus_dir, caches, foreign, sqlite_offsets, missing)
    setting = bus("clients", bus_dir, good, caches, "--set-offsets", "start")

    assert result.returncode == 1 and result.stderr == "" and "Traceback" not in result.stdout
    lines = result.stdout.splitlines()
    unreadable = [line for line in lines[2:-1] if line.split()[-1:] == ["unreadable"]]
    assert len(unreadable) == 5
    text = result.stdout
    assert "_hermes-client-cut.json is damaged or not JSON" in text
    assert "_hermes-client-truncated.json.gz is damaged: its gzip stream is cut or corrupt" in text
    assert f"{foreign} is not a hermes-client cache file" in text
    assert "initstartoffset is '0', not a filelog-bus offset" in text
    assert f"no hermes-client cache file {missing}: it does not exist; check the path" in text
    assert "hermes-client-good" in text and lines[-1] == "result: 1 ok, 5 unreadable"
    assert setting.returncode == 8 and setting.stderr.startswith(
        "filelog-bus clients: error: nothing was changed: "
    )
    assert (
        content_snapshot(caches),
        content_snapshot(bus_dir),
    ) == before  # nothing written, not even the good cache


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    events_bus(tmp_path / "bus", aged_times((1, 60)))
    cache = write_cache(tmp_path / "c", "hermes-client-x", compressed=False, nextoffset=0)

    bad_offset = bus("clients", tmp_path / "bus", cache, "--set-offsets", "middle")
    force_alone = bus("clients", tmp_path / "bus", cache, "--force")
    two_forms = bus("clients", tmp_path / "bus", cache, "--json", "--nagios")

    assert (
        bad_offset.returncode == 2
        and "give start, end, kafka, from-kafka or an offset such as 0" in bad_offset.stderr
    )
    assert force_alone.returncode == 2 and "--force only applies to --set-offsets" in force_alone.stderr
    assert two_forms.returncode == 2


@pytest.mark.parametrize("compressed", [False, True])
def test_a_stale_twin_left_by_a_compression_switch_is_noted_and_ignored(
    tmp_path: Path, compressed: bool
) -> None:
    records = events_bus(tmp_path / "bus", aged_times((5, 60)))
    caches = tmp_path / "cache"
    stale = write_cache(caches, "hermes-client-x", compressed=compressed, nextoffset=1)
    past = time.time() - 3600
    os.utime(stale, (past, past))
    current = write_cache(
        caches, "hermes-client-x", compressed=not compressed, nextoffset=records[-1].offset + 1
    )

    _, report = clients_json(tmp_path / "bus", caches)

    assert [c["cache"] for c in report["clients"]] == [str(current)]
    assert report["notes"] == [
        f"{stale} is ignored: {current} is newer (hermes.cache.enable_compression was switched); delete the stale one"
    ]


def test_prometheus_label_values_with_quotes_backslashes_and_newlines_parse_back() -> None:
    from filelog_bus.cli.prometheus import render
    from filelog_bus.hermes.client_cache import ClientCache
    from filelog_bus.hermes.clients import BusPositions, ClientReport, Unread

    odd = 'C:\\caches\\"odd"\nname/_hermes-client-x.json'
    report = ClientReport(
        ClientCache(odd, "hermes-client-x", "1.0.9", 0, 0, 10), "ok", "", Unread(2, 300, 5.0)
    )

    text = render('/bus "main"', BusPositions(0, 400, 0), [report], now=65.0)

    [lag] = [f for f in text_string_to_metric_families(text) if f.name == "filelog_bus_client_lag_seconds"]
    assert lag.samples[0].labels == {"bus": '/bus "main"', "client": "hermes-client-x", "cache": odd}
    assert lag.samples[0].value == 60.0
