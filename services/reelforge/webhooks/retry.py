"""When the next webhook attempt is due: the Standard Webhooks schedule with jitter, and Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Receivers that ask us to slow down do so with these answers.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay_s(attempt: int, schedule: list[float], jitter: float, retry_after: float | None = None,
                 retry_after_max_s: float = 0.0, rng: random.Random | None = None) -> float | None:
    """Seconds from the end of attempt `attempt` (1-based) to the next one; None when it was the last.

    schedule[i] is the wait before attempt i + 1, drawn uniformly within +-jitter of it so that a
    receiver that comes back is not hit by every retry at once. A Retry-After is honoured up to
    retry_after_max_s: the wait is at least that long, never shorter than the schedule's."""
    if attempt >= len(schedule):
        return None
    delay = schedule[attempt] * (rng or random).uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max_s))
    return delay
