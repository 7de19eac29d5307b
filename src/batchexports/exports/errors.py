"""Reporting of unexpected errors (500s): logged with their traceback, never sent to the client."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.exceptions import APIException

logger = logging.getLogger("batchexports.api")


def report_exception(exc: BaseException, context: Any) -> None:
    # drf-exceptions-hog calls this for every exception it renders; client errors are not bugs.
    if isinstance(exc, APIException | Http404 | PermissionDenied):
        return
    view = context.get("view") if isinstance(context, dict) else None
    logger.error("unhandled error in %s", type(view).__name__ if view else "API", exc_info=exc)
