"""The HTTP sink: events POSTed to another PostHog's `/batch/` endpoint, as PostHog's HTTP batch
export sends them.

Each request is `{"api_key": token, "historical_migration": true, "batch": [event, …]}` with
events `{"uuid", "event", "distinct_id", "timestamp", "properties"}`. The properties are the
event's own, which already hold its `$set`/`$set_once`; an elements chain travels as the
`$elements_chain` property, where capture takes it from. Nothing else is added (PostHog adds
`$geoip_disable`; we keep the events identical to what was captured), so events exported from
one project arrive in another unchanged, and the receiver de-duplicates them by uuid.

Requests are bounded by `max_body_bytes` (uncompressed JSON; PostHog's capture takes 20 MB) and
`max_events`; bodies over `GZIP_ABOVE` bytes are gzipped (`Content-Encoding: gzip`). A 5xx, a
429 (honouring `Retry-After`), a timeout or a dropped connection is retried with exponential
backoff, `max_attempts` times in all, then raised as `RetryableError` so the run retries
later; any other 4xx fails at once with a `NonRetryableError` (401: the token is not a valid
project API key). The token never appears in a message or a log line.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.base import SinkResult
from batchexports.destinations.testing import scrub

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_EVENTS = 5000
GZIP_ABOVE = 64 * 1024
MAX_ATTEMPTS = 5
BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
TIMEOUT = 60.0


def capture_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One exported events row as a `/batch/` event."""
    raw = row.get("properties")
    properties = json.loads(raw) if isinstance(raw, str) and raw else dict(raw or {})
    if row.get("elements_chain"):
        properties["$elements_chain"] = row["elements_chain"]
    timestamp = row.get("timestamp")
    if isinstance(timestamp, dt.datetime):
        moment = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=dt.UTC)
        timestamp = moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "uuid": row["uuid"],
        "event": row["event"],
        "distinct_id": row["distinct_id"],
        "timestamp": timestamp,
        "properties": properties,
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def batch_bodies(
    events: Iterable[bytes], token: str, max_body_bytes: int = MAX_BODY_BYTES, max_events: int = MAX_EVENTS
) -> Iterator[tuple[bytes, int]]:
    """`/batch/` bodies (and the number of events in each) holding the encoded `events` in order,
    each at most `max_body_bytes` (an event larger than that goes alone) and `max_events` long."""
    head = b'{"api_key":' + json.dumps(token).encode() + b',"historical_migration":true,"batch":['
    tail = b"]}"
    pending: list[bytes] = []
    size = len(head) + len(tail)
    for event in events:
        extra = len(event) + (1 if pending else 0)
        if pending and (size + extra > max_body_bytes or len(pending) >= max_events):
            yield head + b",".join(pending) + tail, len(pending)
            pending, size = [], len(head) + len(tail)
            extra = len(event)
        pending.append(event)
        size += extra
    if pending:
        yield head + b",".join(pending) + tail, len(pending)


def _detail(response: Any, token: str) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        text = (body.get("detail") or body.get("error") or json.dumps(body)) if isinstance(body, dict) else str(body)
    return scrub(" ".join(str(text).split())[:300], {"token": token})


class HttpSink:
    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        max_body_bytes: int | None = None,
        max_events: int | None = None,
        max_attempts: int | None = None,
        backoff_seconds: float | None = None,
        timeout: float | None = None,
    ):
        self.url = config["url"]
        self.token = config["token"]
        self.max_body_bytes = max_body_bytes or MAX_BODY_BYTES
        self.max_events = max_events or MAX_EVENTS
        self.max_attempts = max(1, max_attempts or MAX_ATTEMPTS)
        self.backoff_seconds = BACKOFF_SECONDS if backoff_seconds is None else backoff_seconds
        self.timeout = timeout or TIMEOUT

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        if run.model != "events":
            raise NonRetryableError("The HTTP destination exports only the events model.")
        import httpx

        def events() -> Iterator[bytes]:
            for batch in batches:
                if cancel:
                    cancel.raise_if_cancelled()
                for row in batch.to_pylist():
                    yield encode_event(capture_event(row))

        state = Progress()
        with httpx.Client(timeout=self.timeout, headers={"User-Agent": "batchexports"}) as client:
            for body, count in batch_bodies(events(), self.token, self.max_body_bytes, self.max_events):
                if cancel:
                    cancel.raise_if_cancelled()
                sent = self.post(client, body, cancel)
                state.records_completed += count
                state.bytes_exported += sent
                if progress:
                    progress(state)
        return SinkResult(state.records_completed, state.bytes_exported, ())

    def post(self, client: Any, body: bytes, cancel: CancelToken | None = None) -> int:
        """POST one body, retrying what is transient; the number of bytes sent."""
        import httpx

        headers = {"Content-Type": "application/json"}
        if len(body) > GZIP_ABOVE:  # read at call time, so a test can lower it
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            wait = None
            try:
                response = client.post(self.url, content=body, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
                problem = f"{type(error).__name__} talking to {self.url}"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL):
                raise NonRetryableError(f"'{self.url}' is not a URL batchexports can send to: check 'url'.") from None
            else:
                status = response.status_code
                if status < 300:
                    return len(body)
                if status == 429 or status >= 500:
                    problem = f"{self.url} answered {status}: {_detail(response, self.token)}"
                    wait = _retry_after(response)
                else:
                    raise self.client_error(response)
            logger.warning("HTTP export attempt %d/%d failed: %s", attempt, self.max_attempts, problem)
            if attempt < self.max_attempts:
                delay = min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2 ** (attempt - 1))
                delay = wait if wait is not None else delay * (0.5 + random.random() / 2)
                _sleep(min(delay, MAX_BACKOFF_SECONDS), cancel)
        raise RetryableError(f"Sending events failed {self.max_attempts} times in a row: {problem}")

    def client_error(self, response: Any) -> NonRetryableError:
        status = response.status_code
        detail = _detail(response, self.token)
        if status == 401:
            return NonRetryableError(
                f"{self.url} answered 401: the token is not a valid project API key; check 'token' ({detail})."
            )
        if status == 403:
            return NonRetryableError(f"{self.url} answered 403: the token may not send events there ({detail}).")
        if status in (404, 405):
            return NonRetryableError(
                f"{self.url} answered {status}: there is no capture endpoint at this URL; check 'url' "
                "(e.g. https://eu.i.posthog.com/batch/)."
            )
        if status == 413:
            return NonRetryableError(f"{self.url} answered 413: a request was larger than it accepts ({detail}).")
        return NonRetryableError(f"{self.url} rejected the events with {status}: {detail}")


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _sleep(seconds: float, cancel: CancelToken | None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if cancel:
            cancel.raise_if_cancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))
