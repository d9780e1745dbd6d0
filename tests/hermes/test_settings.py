"""The Cerberus schemas shipped with the plugins accept good settings and reject bad ones.

Hermes validates a plugin's settings with `config-schema-plugin-<name>.yml` (unknown keys
rejected, declared defaults filled in) before instantiating the plugin; these tests do the
same with the shipped files, then check that what the schema accepts the engine accepts too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import cerberus
import pytest
import yaml
from helpers.processes import REPO, STANDIN_DIR


def shipped_schema(kind: str) -> dict[str, Any]:
    text = resources.files("filelog_bus.hermes").joinpath("assets", kind, "config-schema-plugin-filelog.yml")
    return yaml.safe_load(text.read_text(encoding="utf-8"))


def validate_like_hermes(kind: str, settings: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(normalised settings or None, Cerberus's errors)."""
    validator = cerberus.Validator(shipped_schema(kind))
    ok = validator.validate(settings)
    return (validator.document if ok else None), validator.errors


GOOD_PRODUCER_SETTINGS = [
    {"path": "/var/lib/hermes/bus"},
    {"path": "bus", "retention_in_days": 30},
    {"path": "bus", "retention_in_days": 0.5, "retention_bytes": 10 * 2**30},
    {"path": "bus", "segment_bytes": 1024, "durability": "never"},
    {"path": "bus", "retention_in_days": 30, "retention_clients": ["/var/lib/hermes/cache-ldap"]},
    {"path": "bus", "retention_bytes": 2**30, "retention_clients": ["/c/_hermes-client-a.json.gz", "/d"]},
    {
        "path": "bus",
        "retention_in_days": 7,
        "retention_bytes": 1,
        "segment_bytes": 2**26,
        "durability": "always",
        "initsync_durable_once": False,
    },
]

BAD_PRODUCER_SETTINGS = [
    ({}, "path", "required field"),
    ({"path": ""}, "path", "empty values not allowed"),
    ({"path": 42}, "path", "must be of string type"),
    ({"path": "bus", "retention_in_days": 0}, "retention_in_days", "unallowed value 0"),
    ({"path": "bus", "retention_in_days": -3}, "retention_in_days", "min value is 0"),
    ({"path": "bus", "retention_in_days": "30d"}, "retention_in_days", "must be of number type"),
    ({"path": "bus", "retention_bytes": 0}, "retention_bytes", "min value is 1"),
    ({"path": "bus", "retention_bytes": 1.5}, "retention_bytes", "must be of integer type"),
    ({"path": "bus", "segment_bytes": 100}, "segment_bytes", "min value is 1024"),
    ({"path": "bus", "segment_bytes": "64M"}, "segment_bytes", "must be of integer type"),
    ({"path": "bus", "durability": "sometimes"}, "durability", "unallowed value sometimes"),
    ({"path": "bus", "initsync_durable_once": "yes"}, "initsync_durable_once", "must be of boolean type"),
    ({"path": "bus", "uri": "/var/lib/hermes/bus.sqlite"}, "uri", "unknown field"),
    (
        {"path": "bus", "retention_clients": "/var/lib/hermes/cache"},
        "retention_clients",
        "must be of list type",
    ),
    ({"path": "bus", "retention_clients": []}, "retention_clients", "empty values not allowed"),
    ({"path": "bus", "retention_clients": [""]}, "retention_clients", "empty values not allowed"),
    ({"path": "bus", "retention_clients": [7]}, "retention_clients", "must be of string type"),
]


@pytest.mark.parametrize("settings", GOOD_PRODUCER_SETTINGS)
def test_producer_schema_accepts_good_settings_and_fills_the_durability_default(
    settings: dict[str, Any],
) -> None:
    normalised, errors = validate_like_hermes("producer", settings)
    assert errors == {}
    assert normalised is not None
    assert normalised["durability"] == settings.get("durability", "always")
    assert normalised["initsync_durable_once"] == settings.get("initsync_durable_once", True)


@pytest.mark.parametrize(("settings", "field", "message"), BAD_PRODUCER_SETTINGS)
def test_producer_schema_rejects_bad_settings_with_cerberus_message(
    settings: dict[str, Any], field: str, message: str
) -> None:
    normalised, errors = validate_like_hermes("producer", settings)
    assert normalised is None
    assert message in str(errors[field])


def test_consumer_schema_requires_only_the_bus_path() -> None:
    assert validate_like_hermes("consumer", {"path": "/var/lib/hermes/bus"}) == (
        {"path": "/var/lib/hermes/bus"},
        {},
    )
    assert "required field" in str(validate_like_hermes("consumer", {})[1]["path"])
    assert "empty values not allowed" in str(validate_like_hermes("consumer", {"path": ""})[1]["path"])
    # Producer-only settings are refused on a client: a copy-pasted server block fails at start-up.
    assert "unknown field" in str(validate_like_hermes("consumer", {"path": "b", "retention_in_days": 1})[1])


@pytest.mark.parametrize("settings", GOOD_PRODUCER_SETTINGS)
def test_every_setting_the_schema_accepts_opens_a_real_bus(
    settings: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    from hermes_plugin import FilelogProducerPlugin

    normalised, _ = validate_like_hermes("producer", settings)
    assert normalised is not None
    with FilelogProducerPlugin({**normalised, "path": str(tmp_path / "bus")}):
        pass
    assert (tmp_path / "bus").is_dir()


def test_an_invalid_value_that_slips_past_cerberus_names_the_hermes_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cerberus counts `true` as an integer; the engine refuses it, naming the settings to fix."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    from filelog_bus.errors import ConfigError
    from hermes_plugin import FilelogProducerPlugin

    settings = {"path": str(tmp_path / "bus"), "retention_bytes": True}
    assert validate_like_hermes("producer", settings)[1] == {}
    producer = FilelogProducerPlugin(settings)
    with pytest.raises(ConfigError, match=r"hermes\.plugins\.messagebus\.filelog\.settings"):
        producer.open()
    # open() failed, so Hermes will not call close(): the writer lock must already be released.
    with FilelogProducerPlugin({"path": str(tmp_path / "bus")}):
        pass
