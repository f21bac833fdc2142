"""Latency histograms for the bench: HDR histograms in microseconds, merged through their encoding.

Every load process records into its own ``HdrHistogram`` (1 µs to 1 hour, 3 significant digits,
so any percentile is within 0.1 % of the true value) and sends back ``encode()``'s compact bytes;
the parent decodes and adds them. No process ever keeps a list of samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from hdrh.histogram import HdrHistogram

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000
SIGNIFICANT_DIGITS: Final = 3
PERCENTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> Any:
    """An empty histogram of microseconds (1 µs .. 1 h)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _micros(elapsed_ns: int) -> int:
    """Nanoseconds as whole microseconds, clamped into the histogram's range."""
    return min(max(elapsed_ns // 1000, LOWEST_US), HIGHEST_US)


def record_ns(histogram: Any, elapsed_ns: int) -> None:
    """Record one latency given in nanoseconds (clamped into the histogram's range)."""
    histogram.record_value(_micros(elapsed_ns))


class Recorder:
    """Records latencies for one HDR histogram with a per-sample cost of a dict update.

    ``HdrHistogram.record_value`` is pure Python (about 0.7 µs), and a load process records one
    sample per job on the same two cores as the broker it measures. Samples are counted per
    whole microsecond (the histogram's own unit, so nothing is lost) and folded into the
    histogram with ``record_value(value, count)`` when it is read, or when more than
    ``max_pending`` distinct values are waiting.
    """

    __slots__ = ("_histogram", "_max_pending", "_pending")

    def __init__(self, max_pending: int = 8192) -> None:
        self._histogram = new_histogram()
        self._pending: dict[int, int] = {}
        self._max_pending = max_pending

    def record_ns(self, elapsed_ns: int) -> None:
        """Record one latency given in nanoseconds (clamped into the histogram's range)."""
        micros = _micros(elapsed_ns)
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + 1
        if len(pending) > self._max_pending:
            self._fold()

    def _fold(self) -> None:
        histogram = self._histogram
        for micros, count in self._pending.items():
            histogram.record_value(micros, count)
        self._pending.clear()

    def histogram(self) -> Any:
        """The histogram with every sample recorded so far."""
        self._fold()
        return self._histogram

    def encode(self) -> bytes:
        """``encode(self.histogram())``."""
        return encode(self.histogram())


def encode(histogram: Any) -> bytes:
    """The histogram's compressed, portable form (what a load process sends back)."""
    data: bytes = histogram.encode()
    return data


def merge(encoded: Iterable[bytes]) -> Any:
    """One histogram holding every sample of the encoded histograms given."""
    merged = new_histogram()
    for data in encoded:
        if data:
            merged.decode_and_add(data)
    return merged


def summary_ms(histogram: Any) -> dict[str, float | int] | None:
    """``{p50, p90, p99, p999, max, mean, count}`` in milliseconds, or ``None`` when empty.

    ``count`` is the number of samples (a plain integer, not milliseconds).
    """
    count = int(histogram.get_total_count())
    if count == 0:
        return None
    out: dict[str, float | int] = {
        key: round(histogram.get_value_at_percentile(pct) / 1000.0, 3) for key, pct in PERCENTILES
    }
    out["max"] = round(histogram.get_max_value() / 1000.0, 3)
    out["mean"] = round(histogram.get_mean_value() / 1000.0, 3)
    out["count"] = count
    return out
