"""The S3 object store: exported files as objects of an AWS S3 bucket or an S3-compatible store.

An object is streamed through a multipart upload: the writer buffers one part (8 MiB by
default, never less than S3's 5 MiB minimum), hands full parts to a small thread pool and
blocks while `max_in_flight` parts are uploading, so memory stays near
`part_size * (max_in_flight + 1)` whatever the size of the file. `commit()` completes the
upload (an object smaller than one part is a single `PutObject`), `abort()` aborts it, so a
failed run never leaves a partial object under its final key. A part that botocore retries is
sent again under the same part number, which replaces it: retries never duplicate data.

Errors are classified once, here: what a person must fix (missing bucket, wrong credentials,
denied access, unusable KMS key, bad endpoint or region) is a `NonRetryableError` with a message
that names the config field to change; what passes (throttling, 5xx, dropped connections,
timeouts, after botocore's own retries) is a `RetryableError`. Messages never contain the keys.

boto3 is imported when a store is built, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError

logger = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3 rejects smaller parts, except the last one
DEFAULT_PART_SIZE = 8 * 1024 * 1024  # 10,000 parts: objects up to 80 GB; split larger exports with max_file_size_mb
DEFAULT_MAX_IN_FLIGHT = 3
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120
MAX_ATTEMPTS = 5

_MISSING_BUCKET = frozenset({"NoSuchBucket"})
_BAD_KEY_ID = frozenset({"InvalidAccessKeyId"})
_BAD_SECRET = frozenset({"SignatureDoesNotMatch"})
_BAD_TOKEN = frozenset({"InvalidToken", "ExpiredToken", "TokenRefreshRequired", "InvalidClientTokenId"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_WRONG_REGION = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "301"}
)
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "NoSuchUpload",  # the upload vanished (a lifecycle rule?): the retried run starts a new one
        "OperationAborted",
        "KMS.ThrottlingException",
        "KMS.KMSInternalException",
    }
)
_KMS_ACCESS_DENIED = ("kms", "key")  # an AccessDenied whose message speaks of the key


def _error_code(error: Any) -> tuple[str, int, str]:
    response = getattr(error, "response", None) or {}
    details = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return str(details.get("Code") or status or ""), int(status), str(details.get("Message") or "")


def _bucket_region(error: Any) -> str | None:
    response = getattr(error, "response", None) or {}
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    return headers.get("x-amz-bucket-region") or (response.get("Error") or {}).get("Region")


def _scrub(message: str, config: Mapping[str, Any]) -> str:
    for name in ("aws_secret_access_key", "aws_access_key_id"):
        value = config.get(name)
        if value and len(str(value)) >= 4:
            message = message.replace(str(value), "***")
    return message


def classify(error: BaseException, config: Mapping[str, Any], action: str) -> DestinationError:
    """The `DestinationError` to raise for `error` (from boto3) met while `action`.

    `action` says what was being done ("uploading 'events/x.parquet'"); the message names the
    bucket, the region and the config field to fix, and never a key.
    """
    if isinstance(error, DestinationError):
        return error
    from botocore import exceptions as bex

    bucket, region = config.get("bucket_name"), config.get("region")
    endpoint = config.get("endpoint_url")
    where = f"the S3-compatible endpoint '{endpoint}'" if endpoint else "S3"
    message: str
    retryable = False

    if isinstance(error, bex.ClientError):
        code, status, detail = _error_code(error)
        head_bucket = getattr(error, "operation_name", "") == "HeadBucket"
        if code in _MISSING_BUCKET or (head_bucket and code in ("404", "NotFound")):
            message = (
                f"The bucket '{bucket}' does not exist in region '{region}'"
                f"{' at ' + str(endpoint) if endpoint else ''}: create it, or fix bucket_name and region."
            )
        elif code in _BAD_KEY_ID:
            message = (
                f"{where} does not know the access key id (InvalidAccessKeyId) while {action}: check aws_access_key_id."
            )
        elif code in _BAD_SECRET:
            message = (
                f"{where} rejected the request signature (SignatureDoesNotMatch) while {action}: "
                "aws_secret_access_key does not belong to aws_access_key_id; check it."
            )
        elif code in _BAD_TOKEN:
            message = (
                f"The AWS credentials are invalid or expired ({code}) while {action}: give current "
                "aws_access_key_id and aws_secret_access_key, or refresh the environment's credentials."
            )
        elif code.startswith("KMS.") or (
            code in ("AccessDenied", "InvalidArgument", "KMSAccessDenied")
            and all(word in detail.lower() for word in _KMS_ACCESS_DENIED)
        ):
            if code in _TRANSIENT:
                message, retryable = f"KMS is throttling or failing ({code}) while {action}; retrying.", True
            else:
                message = (
                    f"The KMS key '{config.get('kms_key_id')}' cannot be used for server-side encryption "
                    f"({code}) while {action}: check kms_key_id, that the key is enabled and in region "
                    f"'{region}', and that the credentials may use it (kms:GenerateDataKey, kms:Decrypt)."
                )
        elif code in _DENIED:
            message = (
                f"Access to the bucket '{bucket}' was denied ({code}) while {action}: check "
                "aws_access_key_id and aws_secret_access_key, and that they allow s3:ListBucket, "
                "s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on the bucket."
            )
        elif code in _WRONG_REGION:
            actual = _bucket_region(error)
            message = (
                f"The bucket '{bucket}' is not in region '{region}'"
                + (f" but in '{actual}'" if actual else "")
                + f" ({code}): set region to the bucket's region."
            )
        elif code == "InvalidBucketName":
            message = f"'{bucket}' is not a valid bucket name: fix bucket_name."
        elif code in ("InvalidEncryptionAlgorithmError", "NotImplemented") and "encrypt" in detail.lower():
            message = f"{where} does not accept encryption '{config.get('encryption')}' ({code}): change encryption."
        elif code in _TRANSIENT or status >= 500 or status == 429:
            message = f"{where} answered {code or status} while {action}; retrying."
            retryable = True
        else:
            message = f"{where} refused the request ({code or status}: {detail or 'no detail'}) while {action}."
    elif isinstance(error, bex.NoCredentialsError | bex.PartialCredentialsError | bex.CredentialRetrievalError):
        message = (
            "No AWS credentials were found: set aws_access_key_id and aws_secret_access_key, or give "
            "the service credentials in its environment (instance role, AWS_* variables)."
        )
    elif isinstance(error, bex.InvalidRegionError):
        message = f"'{region}' is not a valid region name: fix region."
    elif isinstance(error, bex.InvalidEndpointConfigurationError | bex.InvalidS3AddressingStyleError):
        message = (
            f"The endpoint configuration is invalid: {error}. Check endpoint_url and use_virtual_style_addressing."
        )
    elif isinstance(error, bex.ParamValidationError):
        message = f"A request to {where} was invalid while {action}: {error}. Check bucket_name and prefix."
    elif isinstance(error, bex.SSLError):
        message = (
            f"The TLS connection to {where} failed while {action} ({type(error).__name__}): check endpoint_url "
            "(https with a certificate the service trusts, or http)."
        )
    elif isinstance(error, bex.EndpointConnectionError):
        message = (
            f"Could not connect to {where} while {action}; retrying. If this persists, check "
            + ("endpoint_url" if endpoint else "region")
            + " and that the service can reach it."
        )
        retryable = True
    elif isinstance(error, bex.ConnectionError | bex.HTTPClientError | ConnectionError | TimeoutError):
        message = f"The connection to {where} failed while {action} ({type(error).__name__}); retrying."
        retryable = True
    elif isinstance(error, ValueError) and "endpoint" in str(error).lower():
        message = f"endpoint_url '{endpoint}' is not a valid endpoint: {error}."
    else:
        message = f"Unexpected error from {where} while {action}: {type(error).__name__}: {error}"
        retryable = True
    message = _scrub(message, config)
    return RetryableError(message) if retryable else NonRetryableError(message)


def _addressing_style(config: Mapping[str, Any]) -> str:
    """Path style unless asked otherwise; an `AwsS3` config has no such field and lets botocore
    choose ("auto": virtual hosts on AWS, paths on an endpoint set in the environment)."""
    if "use_virtual_style_addressing" not in config:
        return "auto"
    return "virtual" if config.get("use_virtual_style_addressing") else "path"


def make_client(config: Mapping[str, Any], max_pool_connections: int = 10) -> Any:
    """A boto3 S3 client for `config`: its keys, or the default credential chain without them."""
    import boto3
    from botocore.config import Config

    endpoint = config.get("endpoint_url") or None
    options: dict[str, Any] = {
        "s3": {"addressing_style": _addressing_style(config)},
        "retries": {"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "max_pool_connections": max_pool_connections,
    }
    if endpoint:
        # S3-compatible stores (MinIO, R2, GCS) often reject the CRC checksums botocore adds by
        # default since 1.36; send them only where the API requires one.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    session = boto3.session.Session(
        aws_access_key_id=config.get("aws_access_key_id") or None,
        aws_secret_access_key=config.get("aws_secret_access_key") or None,
        region_name=config.get("region") or None,
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(**options))


class S3MultipartWriter:
    """Streams one object to S3; see the module docstring."""

    def __init__(self, store: S3ObjectStore, key: str):
        self._store = store
        self.key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(store.max_in_flight)
        self._futures: list[Future[dict[str, Any]]] = []
        self._next_part = 1
        self._finished = False
        self._failure: tuple[int, BaseException] | None = None  # the first part that failed

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | memoryview | bytearray) -> int:
        if self._finished:
            raise ValueError(f"write to the finished object '{self.key}'")
        view = memoryview(data)
        self._buffer += view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self._raise_if_a_part_failed()
        part_size = self._store.part_size
        if len(self._buffer) >= part_size:
            taken = 0
            while len(self._buffer) - taken >= part_size:
                self._slots.acquire()  # before copying the part, so at most N+1 parts exist at once
                with memoryview(self._buffer) as buffered:
                    chunk = bytes(buffered[taken : taken + part_size])
                taken += part_size
                self._submit(chunk)
            del self._buffer[:taken]
        return view.nbytes

    def flush(self) -> None:
        """Nothing to flush: parts are uploaded as they fill."""

    def _start(self) -> None:
        store = self._store
        with store.translated(f"starting the upload of '{self.key}'"):
            response = store.client.create_multipart_upload(Bucket=store.bucket, Key=self.key, **store.encryption_args)
        self._upload_id = response["UploadId"]
        self._executor = ThreadPoolExecutor(max_workers=store.max_in_flight, thread_name_prefix="s3-upload")

    def _submit(self, chunk: bytes) -> None:
        """Upload `chunk` as the next part; the caller holds one of the in-flight slots."""
        try:
            if self._upload_id is None:
                self._start()
            assert self._executor is not None
            number = self._next_part
            self._next_part += 1
            future = self._executor.submit(self._upload_part, number, chunk)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda done: self._part_done(number, done))
        self._futures.append(future)

    def _part_done(self, number: int, future: Future[dict[str, Any]]) -> None:
        self._slots.release()
        error = None if future.cancelled() else future.exception()
        if error is not None and self._failure is None:
            self._failure = (number, error)

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        store = self._store
        response = store.client.upload_part(
            Bucket=store.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=chunk
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _raise_if_a_part_failed(self) -> None:
        if self._failure is not None:
            number, error = self._failure
            raise self._store.classify(error, f"uploading part {number} of '{self.key}'")

    # -- finishing ---------------------------------------------------------------------------

    def commit(self) -> None:
        if self._finished:
            raise ValueError(f"the object '{self.key}' is already finished")
        store = self._store
        if self._upload_id is None:  # smaller than one part: one request
            self._finished = True
            store.put(self.key, bytes(self._buffer))
            self._buffer = bytearray()
            return
        try:
            if self._buffer:
                self._slots.acquire()
                self._submit(bytes(self._buffer))  # the last part may be smaller than the minimum
                self._buffer = bytearray()
            parts = []
            for number, future in enumerate(self._futures, start=1):
                try:
                    parts.append(future.result())
                except Exception as error:
                    raise store.classify(error, f"uploading part {number} of '{self.key}'") from error
            with store.translated(f"completing the upload of '{self.key}'"):
                store.client.complete_multipart_upload(
                    Bucket=store.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
                )
            self._finished = True
            self._shutdown()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._finished and self._executor is None:
            return
        self._finished = True
        self._buffer = bytearray()
        for future in self._futures:
            future.cancel()
        self._shutdown()
        if self._upload_id is not None:
            store, upload_id, self._upload_id = self._store, self._upload_id, None
            try:
                store.client.abort_multipart_upload(Bucket=store.bucket, Key=self.key, UploadId=upload_id)
            except Exception as error:  # the run fails anyway; a lifecycle rule cleans up what is left
                logger.warning(
                    "could not abort the multipart upload of %r: %s", self.key, store.classify(error, "aborting")
                )

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class S3ObjectStore:
    """The `ObjectStore` of one S3 destination config (validated, secrets included)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        part_size: int | None = None,
        max_in_flight: int | None = None,
        client: Any = None,
    ):
        self.config = config
        self.bucket: str = config["bucket_name"]
        self.part_size = max(part_size or DEFAULT_PART_SIZE, MIN_PART_SIZE)
        self.max_in_flight = max(1, max_in_flight or DEFAULT_MAX_IN_FLIGHT)
        self.encryption_args: dict[str, str] = {}
        if config.get("encryption"):
            self.encryption_args["ServerSideEncryption"] = config["encryption"]
            if config["encryption"] == "aws:kms" and config.get("kms_key_id"):
                self.encryption_args["SSEKMSKeyId"] = config["kms_key_id"]
        if client is None:
            with self.translated("creating the S3 client"):
                client = make_client(config, max_pool_connections=max(10, self.max_in_flight + 2))
        self.client = client

    def classify(self, error: BaseException, action: str) -> DestinationError:
        return classify(error, self.config, action)

    @contextlib.contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Raise what boto3 raises inside as a `RetryableError` or `NonRetryableError`."""
        try:
            yield
        except DestinationError:
            raise
        except Exception as error:
            raise self.classify(error, action) from error

    def head_bucket(self) -> None:
        with self.translated(f"checking the bucket '{self.bucket}'"):
            self.client.head_bucket(Bucket=self.bucket)

    def open(self, key: str) -> S3MultipartWriter:
        return S3MultipartWriter(self, key)

    def put(self, key: str, data: bytes) -> None:
        with self.translated(f"uploading '{key}'"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self.encryption_args)

    def get(self, key: str) -> bytes:
        with self.translated(f"reading '{key}'"):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def list_keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        with self.translated(f"listing the objects under '{prefix}'"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend(item["Key"] for item in page.get("Contents") or ())
        return sorted(found)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            with self.translated(f"deleting {len(chunk)} object(s) such as '{chunk[0]}'"):
                try:
                    response = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True}
                    )
                except Exception as error:
                    if _error_code(error)[0] not in ("NotImplemented", "MethodNotAllowed", "501", "405"):
                        raise
                    # Some S3-compatible stores (GCS) have no multi-object delete.
                    for key in chunk:
                        self.client.delete_object(Bucket=self.bucket, Key=key)
                    continue
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                failure = _delete_error(first.get("Code"), first.get("Message"))
                raise self.classify(failure, f"deleting '{first.get('Key')}' ({len(errors)} object(s) not deleted)")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def remove_leftovers(self, prefix: str, started_before: dt.datetime | None = None) -> list[str]:
        """Abort the incomplete multipart uploads of keys under `prefix` initiated before `started_before`
        (now by default): an interrupted run's parts, which S3 keeps (and bills) until aborted."""
        cutoff = started_before or dt.datetime.now(dt.UTC)
        aborted: list[str] = []
        with self.translated(f"listing the incomplete uploads under '{prefix}'"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads") or ():
                    initiated = upload.get("Initiated")
                    if initiated is not None and initiated >= cutoff:
                        continue  # a run in flight may own it
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except Exception as error:
                        if _error_code(error)[0] != "NoSuchUpload":  # completed or aborted meanwhile
                            raise
                    aborted.append(upload["Key"])
        if aborted:
            logger.info("aborted %d incomplete upload(s) under %s", len(aborted), self.url(prefix))
        return aborted


def _delete_error(code: str | None, message: str | None) -> Exception:
    """A botocore ClientError for a per-key error of DeleteObjects, so it is classified alike."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code or "", "Message": message or ""}}, "DeleteObjects")
