"""Destination tests: the ordered checks a user can run before saving a destination.

Each step is independent (it connects anew), so the API can run step N alone, as PostHog's
web app does. A step reports `Passed`, or `Failed` with a message a person can act on;
secret values are scrubbed from every message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class DestinationCheckFailed(Exception):
    """A test step found a problem; its message tells the user what to fix."""


@dataclass(frozen=True)
class TestStep:
    __test__ = False  # not a pytest test class, despite its name

    name: str
    description: str
    check: Callable[[Mapping[str, Any]], None]  # raises DestinationCheckFailed


def _secret_values(secrets: Any) -> Iterable[str]:
    if isinstance(secrets, Mapping):
        for value in secrets.values():
            yield from _secret_values(value)
    elif isinstance(secrets, list | tuple):
        for value in secrets:
            yield from _secret_values(value)
    elif secrets not in (None, "") and len(str(secrets)) >= 4:
        yield str(secrets)


def scrub(message: str, secrets: Mapping[str, Any]) -> str:
    """`message` with every secret value replaced by `***`."""
    for value in sorted(_secret_values(secrets), key=len, reverse=True):
        message = message.replace(value, "***")
    return message


def describe(steps: tuple[TestStep, ...]) -> dict[str, Any]:
    return {"steps": [{"name": step.name, "description": step.description} for step in steps]}


def run_step(
    steps: tuple[TestStep, ...], index: int, config: Mapping[str, Any], secrets: Mapping[str, Any]
) -> dict[str, Any]:
    step = steps[index]
    result: dict[str, str | None]
    try:
        step.check(config)
    except DestinationCheckFailed as failure:
        result = {"status": "Failed", "message": scrub(str(failure), secrets)}
    except Exception as error:  # an unexpected failure is still a failed step, not a 500
        logger.warning("destination test step %r raised %s", step.name, type(error).__name__)
        result = {"status": "Failed", "message": scrub(f"{type(error).__name__}: {error}", secrets)}
    else:
        result = {"status": "Passed", "message": None}
    return {"name": step.name, "description": step.description, "result": result}
