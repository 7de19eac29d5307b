"""The export retry policy: capped backoff for as long as a retry window lasts.

One place for the numbers the run workflow gives Temporal and the export activity uses to say,
when an attempt fails, whether another will follow and when. An outage shorter than the window
heals by itself; after it the run fails, saying so. Knows nothing of Django or the database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from temporalio.common import RetryPolicy

FIRST_RETRY_AFTER = dt.timedelta(seconds=10)
BACKOFF = 2.0
LONGEST_WAIT = dt.timedelta(minutes=5)
# Runs started by a worker from before the retry window existed (their start_run result has no
# window): the old policy of six attempts.
LEGACY_ATTEMPTS = 6


def policy(window: dt.timedelta, non_retryable: list[str]) -> RetryPolicy:
    """Retries without a count: the activity's schedule-to-close timeout (`window`) ends them."""
    return RetryPolicy(
        initial_interval=FIRST_RETRY_AFTER,
        backoff_coefficient=BACKOFF,
        maximum_interval=LONGEST_WAIT,
        maximum_attempts=0 if window else LEGACY_ATTEMPTS,
        non_retryable_error_types=non_retryable,
    )


def wait_after(attempt: int) -> dt.timedelta:
    """Temporal's wait after failed attempt `attempt` (1-based) under `policy`."""
    seconds = FIRST_RETRY_AFTER.total_seconds() * BACKOFF ** (attempt - 1)
    return min(dt.timedelta(seconds=seconds), LONGEST_WAIT)


@dataclass(frozen=True)
class NextAttempt:
    at: dt.datetime | None  # None: no attempt follows
    window_ends: dt.datetime | None  # None: a legacy run, limited by count


def after_failure(
    attempt: int, now: dt.datetime, first_scheduled: dt.datetime, window: dt.timedelta | None
) -> NextAttempt:
    """When the attempt after failed attempt `attempt` starts, if one does."""
    at = now + wait_after(attempt)
    if not window:
        return NextAttempt(at if attempt < LEGACY_ATTEMPTS else None, None)
    ends = first_scheduled + window
    return NextAttempt(at if at < ends else None, ends)


def describe(window: dt.timedelta) -> str:
    hours, rest = divmod(int(window.total_seconds()), 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{seconds} s" if seconds else ""]
    return " ".join(p for p in parts if p) or "0 s"
