"""How a destination says what went wrong: retry later, or stop and tell the user what to fix.

Messages must never contain credentials; they are shown in the API, the web page and logs.
"""

from __future__ import annotations


class DestinationError(Exception):
    """Base of the errors a sink raises on purpose."""

    retryable = True


class RetryableError(DestinationError):
    """A transient failure (connection drop, timeout, throttling, 5xx): the run retries with backoff."""

    retryable = True


class NonRetryableError(DestinationError):
    """A failure retrying cannot fix (credentials, permissions, missing bucket or table, bad config)."""

    retryable = False
