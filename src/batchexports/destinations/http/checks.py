"""The test steps of the HTTP destination: the URL answers as a capture endpoint, and it accepts
the token with a request that carries no event (nothing is added to the receiving project).

A capture endpoint may refuse a batch without events as such (PostHog's answers 400 "empty
batch"); that answer still proves the endpoint read the request, so it passes. The messages are
the sink's, and the token never appears in them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchexports.destinations.testing import DestinationCheckFailed, TestStep

CHECK_TIMEOUT = 15.0


def _send_empty_batch(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """(the sink, the response to an empty `/batch/` request)."""
    import httpx

    from batchexports.destinations.http.sink import HttpSink

    sink = HttpSink(config, timeout=CHECK_TIMEOUT)
    body = json.dumps({"api_key": config["token"], "historical_migration": True, "batch": []}).encode()
    try:
        with httpx.Client(timeout=CHECK_TIMEOUT, headers={"User-Agent": "batchexports"}) as client:
            response = client.post(sink.url, content=body, headers={"Content-Type": "application/json"})
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        raise DestinationCheckFailed(f"'{sink.url}' is not a URL batchexports can send to: check 'url'.") from None
    except httpx.HTTPError as error:
        raise DestinationCheckFailed(
            f"Cannot reach {sink.url} ({type(error).__name__}): check 'url', and that this server can reach it."
        ) from None
    return sink, response


def _check_reachable(config: Mapping[str, Any]) -> None:
    sink, response = _send_empty_batch(config)
    if response.status_code in (404, 405):
        raise DestinationCheckFailed(str(sink.client_error(response)))


def _check_token(config: Mapping[str, Any]) -> None:
    sink, response = _send_empty_batch(config)
    status = response.status_code
    if status < 300 or (status == 400 and "empty" in response.text.lower()):
        return
    if status == 429 or status >= 500:
        raise DestinationCheckFailed(f"{sink.url} answered {status}: it is unavailable now; try again later.")
    raise DestinationCheckFailed(str(sink.client_error(response)))


STEPS = (
    TestStep(
        name="Reach the capture endpoint",
        description="Send a request to the URL and check that a capture endpoint answers.",
        check=_check_reachable,
    ),
    TestStep(
        name="Send a test request",
        description="Send a batch without events with the token, and check that the endpoint accepts the token.",
        check=_check_token,
    ),
)
