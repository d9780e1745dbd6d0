"""The progress callbacks of long reads (verify, stats, a Kafka export), for a progress bar.

Here, not in one of their modules, so that each names the same kinds without importing another.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(bytes_done, bytes_total)``: called as records are read across the whole bus.
TotalProgress = Callable[[int, int], None]

#: ``progress(bytes_done)``: called as one segment's records are read (a segment check's).
SegmentProgress = Callable[[int], None]
