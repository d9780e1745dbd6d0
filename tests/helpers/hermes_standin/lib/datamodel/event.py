"""Stand-in for Hermes's `lib.datamodel.event.Event`: just what a message bus touches."""

from __future__ import annotations

import datetime
import json
from typing import Any


class Event:
    """A change (or an initsync marker) travelling on the bus.

    `offset` and `timestamp` are set by the consumer plugin on every event it yields.
    """

    def __init__(
        self,
        evcategory: str,
        eventtype: str,
        objtype: str | None = None,
        objpkey: Any = None,
        objattrs: dict[str, Any] | None = None,
    ) -> None:
        self.evcategory = evcategory
        self.eventtype = eventtype
        self.objtype = objtype
        self.objpkey = objpkey
        self.objattrs = objattrs if objattrs is not None else {}
        self.offset: int | float | str | bytes | None = None
        self.timestamp: datetime.datetime | None = None

    def to_json(self) -> str:
        """Pretty-printed JSON, as Hermes produces (plugins must treat it as opaque)."""
        fields = {
            "evcategory": self.evcategory,
            "eventtype": self.eventtype,
            "objtype": self.objtype,
            "objpkey": self.objpkey,
            "objattrs": self.objattrs,
        }
        return json.dumps(fields, indent=4, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Event:
        fields = json.loads(text)
        return cls(
            evcategory=fields["evcategory"],
            eventtype=fields["eventtype"],
            objtype=fields.get("objtype"),
            objpkey=fields.get("objpkey"),
            objattrs=fields.get("objattrs"),
        )

    def __repr__(self) -> str:
        return f"<Event {self.evcategory}/{self.eventtype} {self.objtype}:{self.objpkey} @{self.offset}>"
