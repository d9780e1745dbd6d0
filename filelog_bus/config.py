"""Writer settings, validated up front so a bad value fails at open, not mid-stream."""

from __future__ import annotations

from dataclasses import dataclass

from filelog_bus.errors import ConfigError
from filelog_bus.record import MAX_BODY_BYTES

DURABILITY_ALWAYS = "always"
DURABILITY_NEVER = "never"
DURABILITIES = (DURABILITY_ALWAYS, DURABILITY_NEVER)
MIN_SEGMENT_BYTES = 1024
MIN_INDEX_INTERVAL = 64
MAX_INDEX_INTERVAL = 2**31


@dataclass(frozen=True)
class WriterConfig:
    durability: str = DURABILITY_ALWAYS
    segment_bytes: int = 64 * 2**20
    index_interval_bytes: int = 4096
    max_record_bytes: int = 16 * 2**20
    lock_timeout: float | None = 0.0

    def __post_init__(self) -> None:
        if self.durability not in DURABILITIES:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITIES)}, got {self.durability!r}")
        _check_int("segment_bytes", self.segment_bytes, MIN_SEGMENT_BYTES, 2**62)
        _check_int("index_interval_bytes", self.index_interval_bytes, MIN_INDEX_INTERVAL, MAX_INDEX_INTERVAL)
        _check_int("max_record_bytes", self.max_record_bytes, 64, MAX_BODY_BYTES)
        if self.lock_timeout is not None and (
            isinstance(self.lock_timeout, bool)
            or not isinstance(self.lock_timeout, (int, float))
            or self.lock_timeout < 0
        ):
            raise ConfigError(
                f"lock_timeout must be a number of seconds >= 0 or None, got {self.lock_timeout!r}"
            )


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {value!r}")
