"""How a destination says what went wrong: retry later, or stop and tell the user what to fix.

Messages must never contain credentials; they are shown in the API, the web page and logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class DestinationError(Exception):
    """Base of the errors a sink raises on purpose."""

    retryable = True


class RetryableError(DestinationError):
    """A transient failure (connection drop, timeout, throttling, 5xx): the run retries with backoff."""

    retryable = True


class NonRetryableError(DestinationError):
    """A failure retrying cannot fix (credentials, permissions, missing bucket or table, bad config)."""

    retryable = False


@contextlib.contextmanager
def classified_by(classify: Callable[..., DestinationError], *context: Any) -> Iterator[None]:
    """Raise whatever a client library raises inside as `classify(error, *context)`; our own errors
    and cancellation pass through unchanged."""
    from batchexports.core.run import Cancelled

    try:
        yield
    except (DestinationError, Cancelled):
        raise
    except Exception as error:
        raise classify(error, *context) from None
