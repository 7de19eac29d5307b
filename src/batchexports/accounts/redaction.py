"""Keeps personal API keys sent as `?personal_api_key=` out of log lines.

PostHog accepts a key in the query string, and uvicorn's access log prints every request's full
path, query included. This filter rewrites the value before any handler formats the line.
"""

from __future__ import annotations

import logging
import re

_IN_QUERY = re.compile(r"(personal_api_key=)[^&\s\"']*", re.IGNORECASE)
REDACTED = r"\1[redacted]"
# The loggers that print request paths: uvicorn's access log, and Django's request/server logs.
PATH_LOGGERS = ("uvicorn.access", "uvicorn.error", "django.request", "django.server")


def redact(text: str) -> str:
    return _IN_QUERY.sub(REDACTED, text)


class RedactPersonalAPIKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install() -> None:
    """Attach the filter to every logger that prints request paths (idempotent)."""
    for name in PATH_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactPersonalAPIKeys) for f in logger.filters):
            logger.addFilter(RedactPersonalAPIKeys())
