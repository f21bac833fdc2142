"""The core's policy (``CoreConfig``: job defaults and limits, in ms) and how settings give it.

The default values are defined once, in ``broker.config.Settings`` (seconds, as the flags and the
README state them); ``CoreConfig``'s defaults are those settings converted here, so a core built
with ``CoreConfig()`` behaves like a broker started with no flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker.config import Settings
from protocol.model import Backoff, BackoffKind, Retention


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _ms_or_none(seconds: float | None) -> int | None:
    return None if seconds is None else _ms(seconds)


def _backoff(settings: Settings) -> Backoff:
    return Backoff(
        BackoffKind(settings.default_backoff),
        _ms(settings.backoff_base),
        _ms_or_none(settings.backoff_max),
        settings.backoff_jitter,
    )


def _keep_completed(settings: Settings) -> Retention:
    return Retention(settings.keep_completed_count, _ms_or_none(settings.keep_completed_age))


def _keep_failed(settings: Settings) -> Retention:
    return Retention(settings.keep_failed_count, _ms_or_none(settings.keep_failed_age))


_DEFAULTS: Final = Settings()
_DEFAULT_BACKOFF: Final = _backoff(_DEFAULTS)
_DEFAULT_KEEP_COMPLETED: Final = _keep_completed(_DEFAULTS)
_DEFAULT_KEEP_FAILED: Final = _keep_failed(_DEFAULTS)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Broker-wide job defaults and limits the core enforces (durations in ms)."""

    default_max_attempts: int = _DEFAULTS.default_attempts
    default_backoff: Backoff = _DEFAULT_BACKOFF
    default_lease_ms: int = _ms(_DEFAULTS.default_lease)
    keep_completed: Retention = _DEFAULT_KEEP_COMPLETED
    keep_failed: Retention = _DEFAULT_KEEP_FAILED
    max_payload: int = _DEFAULTS.max_payload
    max_queue_jobs: int | None = _DEFAULTS.max_queue_jobs
    max_total_jobs: int | None = _DEFAULTS.max_total_jobs


def core_config(settings: Settings) -> CoreConfig:
    """The core's policy from the broker's settings."""
    return CoreConfig(
        default_max_attempts=settings.default_attempts,
        default_backoff=_backoff(settings),
        default_lease_ms=_ms(settings.default_lease),
        keep_completed=_keep_completed(settings),
        keep_failed=_keep_failed(settings),
        max_payload=settings.max_payload,
        max_queue_jobs=settings.max_queue_jobs,
        max_total_jobs=settings.max_total_jobs,
    )
