"""`filelog-bus hermes-install` on a fake Hermes tree, and the installed plugins loaded the way Hermes does.

The fake tree holds the stand-in `lib/` (copied from tests/helpers/hermes_standin) and the two plugin
family directories; the installer runs as a separate process, as a user would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from helpers.processes import REPO, STANDIN_DIR

FILES = ("filelog.py", "config-schema-plugin-filelog.yml", "README.md", "requirements.txt")
FAMILIES = {"producer": "messagebus_producers", "consumer": "messagebus_consumers"}


def repo_env() -> dict[str, str]:
    """This checkout's filelog-bus importable, and nothing of Hermes."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def make_hermes_tree(root: Path) -> Path:
    shutil.copytree(STANDIN_DIR / "lib", root / "lib")
    for family in FAMILIES.values():
        (root / "plugins" / family / "sqlite").mkdir(parents=True)
        (root / "plugins" / family / "sqlite" / "sqlite.py").write_text("# the SQLite plugin lives here\n")
    return root


def install(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filelog_bus.cli.hermes_install", *map(str, args)],
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def installed(root: Path, kind: str, name: str) -> Path:
    return root / "plugins" / FAMILIES[kind] / "filelog" / name


#: What the installed `filelog.py` of each plugin must be: an import of our class, nothing more.
PLUGIN_MODULE = """\"\"\"Hermes {kind} plugin `filelog`, installed by `filelog-bus hermes-install`.

The implementation lives in the `filelog-bus` package installed in Hermes's Python environment.
\"\"\"

from {module} import {name}

HERMES_PLUGIN_CLASSNAME = "{name}"

__all__ = ["HERMES_PLUGIN_CLASSNAME", "{name}"]
"""
PLUGIN_CLASSES = {
    "producer": ("hermes_plugin", "FilelogProducerPlugin"),
    "consumer": ("hermes_consumer_plugin", "FilelogConsumerPlugin"),
}


def asset(kind: str, name: str) -> bytes:
    if name == "filelog.py":
        module, class_name = PLUGIN_CLASSES[kind]
        return PLUGIN_MODULE.format(kind=kind, module=module, name=class_name).encode()
    return resources.files("filelog_bus.hermes").joinpath("assets", kind, name).read_bytes()


@pytest.fixture
def hermes_tree(tmp_path: Path) -> Path:
    return make_hermes_tree(tmp_path / "hermes")


def test_install_creates_both_plugin_folders_with_the_four_files(hermes_tree: Path) -> None:
    result = install(hermes_tree)

    assert result.returncode == 0, result.stderr
    for kind in FAMILIES:
        for name in FILES:
            assert installed(hermes_tree, kind, name).read_bytes() == asset(kind, name)
    assert result.stdout.count("created") == 8
    # Thin: the installed modules import the plugin class and hold no engine code.
    producer_module = installed(hermes_tree, "producer", "filelog.py").read_text()
    assert "from hermes_plugin import FilelogProducerPlugin" in producer_module
    assert "LogWriter" not in producer_module and len(producer_module.splitlines()) < 15


def test_install_is_idempotent(hermes_tree: Path) -> None:
    assert install(hermes_tree).returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (hermes_tree / "plugins").rglob("filelog/*")}

    again = install(hermes_tree)

    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 8
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (hermes_tree / "plugins").rglob("filelog/*")}
    assert after == before


def test_a_differing_file_is_only_replaced_with_force(hermes_tree: Path) -> None:
    assert install(hermes_tree).returncode == 0
    edited = installed(hermes_tree, "consumer", "README.md")
    edited.write_text("local notes\n")
    removed = installed(hermes_tree, "producer", "requirements.txt")
    removed.unlink()

    refused = install(hermes_tree)

    assert refused.returncode == 1
    assert str(edited) in refused.stderr and "--force" in refused.stderr
    assert edited.read_text() == "local notes\n"
    assert not removed.exists(), "nothing is written when the install is refused"

    forced = install(hermes_tree, "--force")

    assert forced.returncode == 0, forced.stderr
    assert edited.read_bytes() == asset("consumer", "README.md")
    assert removed.read_bytes() == asset("producer", "requirements.txt")
    assert f"replaced  {edited}" in forced.stdout


def test_the_filelog_bus_command_runs_the_installer(hermes_tree: Path, tmp_path: Path) -> None:
    """`filelog-bus hermes-install HERMES_DIR`, through the console script's entry point."""
    command = "import sys; from filelog_bus.cli.main import main; sys.exit(main(sys.argv[1:]))"

    def filelog_bus(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", command, *map(str, args)],
            env=repo_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    installed_ok = filelog_bus("hermes-install", hermes_tree)
    assert installed_ok.returncode == 0, installed_ok.stderr
    assert installed(hermes_tree, "consumer", "filelog.py").read_bytes() == asset("consumer", "filelog.py")
    refused = filelog_bus("hermes-install", tmp_path / "not-hermes")
    assert refused.returncode == 3  # not a Hermes tree: "not what the command works on"
    assert refused.stderr.startswith("filelog-bus hermes-install: error:")


@pytest.mark.parametrize("layout", ["empty", "missing", "plugins-only", "lib-only"])
def test_a_directory_that_is_not_a_hermes_tree_is_refused(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "target"
    if layout != "missing":
        target.mkdir()
    if layout == "plugins-only":
        for family in FAMILIES.values():
            (target / "plugins" / family).mkdir(parents=True)
    if layout == "lib-only":
        shutil.copytree(STANDIN_DIR / "lib", target / "lib")

    result = install(target)

    assert result.returncode == 3
    assert "hermes-install: error:" in result.stderr and "Hermes" in result.stderr
    if layout in ("empty", "plugins-only"):
        assert "lib/plugins.py" in result.stderr
    if layout in ("empty", "lib-only"):
        assert "plugins/messagebus_producers/" in result.stderr
    assert not list(tmp_path.rglob("filelog"))


HERMES_LIKE_LOADER = """
import importlib, json, sys
import cerberus, yaml

hermes_dir, bus = sys.argv[1], sys.argv[2]
sys.path.insert(0, hermes_dir)  # Hermes runs from its own tree: `lib` and `plugins` come from there


def load_plugin(family, settings):
    module = importlib.import_module(f"plugins.{family}.filelog.filelog")
    plugin_class = getattr(module, module.HERMES_PLUGIN_CLASSNAME)
    with open(f"{hermes_dir}/plugins/{family}/filelog/config-schema-plugin-filelog.yml") as schema_file:
        validator = cerberus.Validator(yaml.safe_load(schema_file))
    assert validator.validate(settings), validator.errors
    return plugin_class(validator.document)


from lib.datamodel.event import Event

producer = load_plugin("messagebus_producers", {"path": bus, "retention_in_days": 30})
with producer:
    producer.send(Event("initsync", "init-start"))
    producer.send(Event("base", "added", "user", "u1", {"uid": 1}))
consumer = load_plugin("messagebus_consumers", {"path": bus})
consumer.setTimeout(0)
with consumer:
    consumer.seekToBeginning()
    events = [[e.evcategory, e.eventtype, e.objpkey, e.offset] for e in consumer]

import filelog_bus, hermes_plugin, lib.plugins
print(json.dumps({
    "classes": [type(producer).__name__, type(consumer).__name__],
    "class_modules": [type(producer).__module__, type(consumer).__module__],
    "events": events,
    "lib_from": lib.plugins.__file__,
    "engine_from": filelog_bus.__file__,
    "plugin_from": hermes_plugin.__file__,
}))
"""


def test_installed_plugins_load_validate_and_carry_events_like_in_hermes(
    hermes_tree: Path, tmp_path: Path
) -> None:
    assert install(hermes_tree).returncode == 0
    result = subprocess.run(
        [sys.executable, "-c", HERMES_LIKE_LOADER, str(hermes_tree), str(tmp_path / "bus")],
        cwd=hermes_tree,
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == ["FilelogProducerPlugin", "FilelogConsumerPlugin"]
    assert report["class_modules"] == ["hermes_plugin", "hermes_consumer_plugin"]
    assert [e[:3] for e in report["events"]] == [["initsync", "init-start", None], ["base", "added", "u1"]]
    assert Path(report["lib_from"]).is_relative_to(hermes_tree)
    for module_file in (report["engine_from"], report["plugin_from"]):
        assert not Path(module_file).is_relative_to(hermes_tree), "the engine is imported, never copied"
