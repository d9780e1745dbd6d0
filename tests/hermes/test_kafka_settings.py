"""Settings a user can get wrong for the Kafka commands: each one a one-line usage error (status 2) that
names the setting, before anything is done, never a traceback nor a broker error's advice."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bus import write_bus
from helpers.cli import KAFKA_EXPORT_PROG, assert_error_line, sample
from helpers.kafka import Broker, assert_topic_is_bus, export, partitions_of, topic_messages


@pytest.mark.parametrize("seconds", ["600", "3600"])
def test_a_timeout_longer_than_nine_minutes_works(
    tmp_path: Path, broker: Broker, topic: str, seconds: str
) -> None:
    """kafka-python refuses a request timeout above its idle-connection limit (540 s) unless told more."""
    path = tmp_path / "bus"
    write_bus(path, sample(5))

    result = export(path, broker, topic, "--timeout", seconds)

    assert result.returncode == 0, result.stderr
    assert len(assert_topic_is_bus(broker, topic, path)) == 5


def test_a_timeout_beyond_an_hour_is_a_usage_error(tmp_path: Path, broker: Broker, topic: str) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(5))

    result = export(path, broker, topic, "--timeout", "1e12")

    assert "the Kafka timeout must be between 1 second and 3600 seconds" in assert_error_line(
        result, KAFKA_EXPORT_PROG, 2
    )
    assert partitions_of(broker.bootstrap, topic) == set()


def test_a_replication_factor_beyond_kafkas_limit_is_a_usage_error(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(5))

    result = export(path, broker, topic, "--replication-factor", "99999999999")

    assert "replication factor is 1 to 32767" in assert_error_line(result, KAFKA_EXPORT_PROG, 2)
    assert partitions_of(broker.bootstrap, topic) == set()


@pytest.mark.parametrize("size", ["0", "1", "100"])
def test_a_request_size_too_small_for_any_message_is_a_usage_error(
    tmp_path: Path, broker: Broker, topic: str, size: str
) -> None:
    """0 used to mean the default silently, and 1 a 'record takes 158 bytes, more than -60' Kafka error."""
    path = tmp_path / "bus"
    write_bus(path, sample(5))

    result = export(path, broker, topic, "--max-request-size", size)

    assert "the Kafka request size must be at least 1024 bytes" in assert_error_line(
        result, KAFKA_EXPORT_PROG, 2
    )
    assert topic_messages(broker.bootstrap, topic) == []
