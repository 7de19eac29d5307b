"""The Azure Blob Storage object store: files in a container, written as block blobs.

A file is streamed to the service as blocks of `BLOCK_SIZE` bytes staged under deterministic
ids (`stage_block`), a few in flight at a time, so memory stays bounded whatever the file's
size; `commit()` commits the block list, which makes the blob appear in one step and replaces
an older blob of the same name. A file smaller than one block is uploaded in a single request.
`abort()` commits nothing: the older blob (if any) stays as it was, and the service
garbage-collects the uncommitted blocks. Because block ids are deterministic, a retried
attempt re-stages (replaces) the same blocks instead of piling up new ones.

Every Azure failure leaves this module as a `RetryableError` or `NonRetryableError` whose
message says what to fix and never contains the connection string or its account key or SAS.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings, ExponentialRetry

from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

# Size of a staged block: Azure allows up to 50,000 blocks per blob, so 8 MiB blocks reach ~390 GiB.
BLOCK_SIZE = 8 * 1024 * 1024
MAX_BLOCKS = 50_000
# Blocks uploading at once per open file; memory per file is about (BLOCKS_IN_FLIGHT + 1) * BLOCK_SIZE.
BLOCKS_IN_FLIGHT = 2
# A blob batch request carries at most 256 sub-requests.
DELETE_CHUNK = 256
# Every block id of a blob must have the same length: a fixed prefix and a zero-padded index.
BLOCK_ID_FORMAT = "batchexports-{:06d}"

# The client's own retries, for blips within a run (backoff 1 s, 3 s, 5 s, with jitter); the run's
# retry policy (Temporal) handles longer outages. Timeouts in seconds.
RETRY_TOTAL = 3
RETRY_INITIAL_BACKOFF = 1
RETRY_INCREMENT_BASE = 2
CONNECTION_TIMEOUT = 20
READ_TIMEOUT = 120

# Characters left as they are in a blob's URL (valid in a URL path), so that names stay readable.
URL_SAFE = "/:@~!$'()*+,;="

CONTENT_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "json": "application/json",
    "gz": "application/gzip",
    "zst": "application/zstd",
}

# Error codes of the Blob service (https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes).
CREDENTIAL_CODES = frozenset(
    {"AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation", "AuthorizationFailure"}
)
PERMISSION_CODES = frozenset(
    {
        "AuthorizationPermissionMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationSourceIPMismatch",
        "InsufficientAccountPermissions",
        "KeyBasedAuthenticationNotPermitted",
    }
)
TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
_SECRET_FIELDS = ("AccountKey", "SharedAccessSignature")

# The SDK logs every request and response at INFO (one line set per 8 MiB block): keep warnings only.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def _error_code(error: HttpResponseError) -> str:
    code = getattr(error, "error_code", None)
    if code is None and error.response is not None:
        code = getattr(error.response, "headers", {}).get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


class AzureBlobObjectStore:
    """A container of a storage account, reached with the account's connection string."""

    def __init__(self, config: Mapping[str, Any]):
        self.container_name = str(config["container_name"])
        connection_string = str(config["connection_string"])
        self._secrets = _secret_parts(connection_string)
        try:
            self._service = BlobServiceClient.from_connection_string(
                connection_string,
                retry_policy=ExponentialRetry(
                    initial_backoff=RETRY_INITIAL_BACKOFF,
                    increment_base=RETRY_INCREMENT_BASE,
                    retry_total=RETRY_TOTAL,
                    random_jitter_range=1,
                ),
                connection_timeout=CONNECTION_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                user_agent="batchexports",
            )
        except ValueError:
            raise NonRetryableError(
                "The connection string of the storage account is malformed; copy it again from the Azure "
                "portal (storage account → Security + networking → Access keys → Connection string)."
            ) from None
        self.account_name = self._service.account_name or "?"
        self.endpoint = urlsplit(self._service.url).netloc
        self._container: ContainerClient = self._service.get_container_client(self.container_name)

    # The ObjectStore protocol

    def open(self, key: str) -> AzureBlobWriter:
        return AzureBlobWriter(self, key)

    def put(self, key: str, data: bytes) -> None:
        writer = self.open(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def list_keys(self, prefix: str) -> list[str]:
        try:
            return sorted(blob.name for blob in self._container.list_blobs(name_starts_with=prefix or None))
        except AzureError as error:
            raise self.translate(error, "list the blobs of") from None

    def delete(self, keys: list[str]) -> None:
        """Delete blobs (and their snapshots) in batch requests; a blob already gone is fine."""
        for start in range(0, len(keys), DELETE_CHUNK):
            chunk = keys[start : start + DELETE_CHUNK]
            try:
                # Not retried: when the batch request fails as a whole (a transient failure, or a store
                # without blob batch, such as Azurite with a SAS), the blobs are deleted one by one,
                # each request with the client's retries and its own error.
                responses = self._container.delete_blobs(
                    *chunk, delete_snapshots="include", raise_on_any_failure=False, retry_total=0
                )
            except HttpResponseError as error:
                translated = self.translate(error, "delete blobs in")
                if isinstance(translated, NonRetryableError) and error.status_code not in (400, 404, 405, 501):
                    raise translated from None
                self._delete_one_by_one(chunk)
                continue
            except AzureError as error:
                raise self.translate(error, "delete blobs in") from None
            for key, response in zip(chunk, responses, strict=False):
                if response.status_code not in (200, 202, 404):  # 404: already gone, which is what we want
                    code = response.headers.get("x-ms-error-code") or ""
                    raise self._from_status(response.status_code, code, f"delete the blob '{key}' in", "")

    def _delete_one_by_one(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._container.delete_blob(key, delete_snapshots="include")
            except HttpResponseError as error:
                if error.status_code == 404 and _error_code(error) in ("BlobNotFound", ""):
                    continue
                raise self.translate(error, f"delete the blob '{key}' in") from None
            except AzureError as error:
                raise self.translate(error, f"delete the blob '{key}' in") from None

    def url(self, key: str) -> str:
        """The blob's https URL, without the SAS token of the connection string (':' stays readable)."""
        container_url = urlunsplit(urlsplit(self._container.url)._replace(query="", fragment=""))
        return f"{container_url.rstrip('/')}/{quote(key, safe=URL_SAFE)}"

    # Beyond the protocol: what the destination's test steps need

    def check_container(self) -> None:
        """Reach the container: its properties, or (for a SAS that may only list) its first blob."""
        try:
            self._container.get_container_properties()
        except HttpResponseError as error:
            if _error_code(error) not in PERMISSION_CODES:
                raise self.translate(error, "read the properties of") from None
            try:
                next(iter(self._container.list_blobs(results_per_page=1).by_page()), None)
            except AzureError as second:
                raise self.translate(second, "read the properties of") from None
        except AzureError as error:
            raise self.translate(error, "read the properties of") from None

    def read(self, key: str) -> bytes:
        try:
            return self._container.get_blob_client(key).download_blob().readall()
        except AzureError as error:
            raise self.translate(error, f"read the blob '{key}' in") from None

    def close(self) -> None:
        self._service.close()

    def __enter__(self) -> AzureBlobObjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Errors

    def translate(self, error: BaseException, action: str) -> DestinationError:
        """The error to raise for an Azure failure while doing `action` ("write the blob 'x' in") the container."""
        if isinstance(error, DestinationError):
            return error
        if isinstance(error, ClientAuthenticationError) and error.status_code is None:
            # Raised before any request: the client could not sign it (the key is not valid base64).
            return NonRetryableError(
                f"Could not sign requests to the storage account '{self.account_name}': the AccountKey of the "
                "connection string is not a valid key. Copy the connection string again from the Azure portal "
                "(storage account → Access keys)."
            )
        if isinstance(error, HttpResponseError) and error.status_code is not None:
            return self._from_status(error.status_code, _error_code(error), action, _first_line(str(error)))
        if isinstance(error, ServiceRequestError):
            return RetryableError(
                f"Could not connect to Azure Blob Storage at {self.endpoint} to {action} the container "
                f"'{self.container_name}' ({self._reason(error)}). If this persists, check the account name or "
                "BlobEndpoint of the connection string and the network between this service and Azure."
            )
        if isinstance(error, ServiceResponseError):
            return RetryableError(
                f"The connection to Azure Blob Storage at {self.endpoint} broke or timed out while trying to "
                f"{action} the container '{self.container_name}' ({self._reason(error)})."
            )
        return RetryableError(
            f"Azure Blob Storage failed to {action} the container '{self.container_name}' "
            f"({type(error).__name__}: {self._reason(error)})."
        )

    def _from_status(self, status: int, code: str, action: str, detail: str) -> DestinationError:
        where = f"the container '{self.container_name}' of the storage account '{self.account_name}'"
        label = f"HTTP {status}{' ' + code if code else ''}"
        if code == "ContainerNotFound":
            return NonRetryableError(
                f"The container '{self.container_name}' does not exist in the storage account "
                f"'{self.account_name}'. Create it, or fix container_name."
            )
        if code == "ContainerBeingDeleted":
            return NonRetryableError(
                f"The container '{self.container_name}' is being deleted; recreate it once the deletion finishes, "
                "or choose another container."
            )
        if code in CREDENTIAL_CODES or status == 401:
            return NonRetryableError(
                f"The storage account '{self.account_name}' rejected the credentials of the connection string "
                f"({label}). Copy the connection string again from the Azure portal (the account key may have "
                "been rotated, or the SAS expired), and make sure the account's firewall admits this service."
            )
        if code in PERMISSION_CODES or status == 403:
            return NonRetryableError(
                f"The connection string may not {action} {where} ({label}). A SAS needs the read, write, list "
                "and delete permissions on the container and must not be restricted to other IP addresses."
            )
        if status in (408, 429) or status >= 500 or code in TRANSIENT_CODES:
            return RetryableError(
                f"Azure Blob Storage is unavailable or busy ({label}) while trying to {action} {where}."
            )
        reason = self._scrub(detail)
        return NonRetryableError(
            f"Azure Blob Storage refused to {action} {where} ({label}){': ' + reason if reason else ''}."
        )

    def _reason(self, error: BaseException) -> str:
        return self._scrub(_first_line(getattr(error, "message", None) or str(error))) or type(error).__name__

    def _scrub(self, text: str) -> str:
        """`text` without URL query strings (a SAS) or any secret part of the connection string."""
        text = re.sub(r"\?[^\s'\")]*", "", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text.rstrip(".")


def _secret_parts(connection_string: str) -> list[str]:
    parts = [connection_string] if connection_string else []
    for item in connection_string.split(";"):
        name, _, value = item.partition("=")
        if name.strip() in _SECRET_FIELDS and value.strip():
            parts.append(value.strip())
    return sorted(parts, key=len, reverse=True)


class AzureBlobWriter:
    """Streams one blob as staged blocks; the blob appears (or is replaced) on `commit()` only."""

    def __init__(self, store: AzureBlobObjectStore, key: str):
        self._store = store
        self.key = key
        self._blob: BlobClient = store._container.get_blob_client(key)
        self._block_size = BLOCK_SIZE
        self._buffer = bytearray()
        self._block_ids: list[str] = []
        self._in_flight: deque[Future[None]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._finished = False
        extension = key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
        self._content = ContentSettings(content_type=CONTENT_TYPES.get(extension, "application/octet-stream"))

    def write(self, data: bytes | memoryview) -> int:
        if self._finished:
            raise ValueError(f"The blob '{self.key}' was already committed or aborted.")
        view = memoryview(data).cast("B")
        size = view.nbytes
        while view.nbytes:
            room = self._block_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self._block_size:
                self._stage(bytes(self._buffer))
                self._buffer.clear()
        return size

    def _stage(self, block: bytes) -> None:
        self._collect(wait_for=BLOCKS_IN_FLIGHT - 1)
        index = len(self._block_ids)
        if index >= MAX_BLOCKS:
            raise NonRetryableError(
                f"The file '{self.key}' is larger than an Azure block blob can be ({MAX_BLOCKS:,} blocks of "
                f"{self._block_size // (1024 * 1024)} MiB); set max_file_size_mb to split it into parts."
            )
        block_id = BLOCK_ID_FORMAT.format(index)
        self._block_ids.append(block_id)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=BLOCKS_IN_FLIGHT, thread_name_prefix="azure-blob-stage")
        self._in_flight.append(self._pool.submit(self._stage_block, block_id, block))

    def _stage_block(self, block_id: str, block: bytes) -> None:
        try:
            self._blob.stage_block(block_id, block, length=len(block), validate_content=True)
        except AzureError as error:
            raise self._store.translate(error, f"write the blob '{self.key}' in") from None

    def _collect(self, wait_for: int) -> None:
        """Raise the error of any finished upload; wait until at most `wait_for` are still running."""
        while self._in_flight and (self._in_flight[0].done() or len(self._in_flight) > wait_for):
            self._in_flight.popleft().result()

    def commit(self) -> None:
        if self._finished:
            raise ValueError(f"The blob '{self.key}' was already committed or aborted.")
        action = f"write the blob '{self.key}' in"
        try:
            if not self._block_ids:  # fits in one block: a single Put Blob
                self._blob.upload_blob(
                    bytes(self._buffer), overwrite=True, content_settings=self._content, validate_content=True
                )
            else:
                if self._buffer:
                    self._stage(bytes(self._buffer))
                    self._buffer.clear()
                self._collect(wait_for=0)
                self._blob.commit_block_list(
                    self._block_ids,  # type: ignore[arg-type]  # ids are accepted as str
                    content_settings=self._content,
                )
        except AzureError as error:
            raise self._store.translate(error, action) from None
        finally:
            self._finish()

    def abort(self) -> None:
        """Commit nothing; the uncommitted blocks are garbage-collected by the service."""
        if not self._finished:
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._buffer = bytearray()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight.clear()

    @property
    def block_ids(self) -> tuple[str, ...]:
        return tuple(self._block_ids)
