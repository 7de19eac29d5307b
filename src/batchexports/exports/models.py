"""Batch exports, their destinations, runs, backfills and log entries (the metadata database).

This database is the source of truth; the engine's schedules are derived from it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models

from batchexports.accounts.models import Project
from batchexports.core.intervals import INTERVALS
from batchexports.destinations import registry
from batchexports.destinations.base import deep_merge, split_secrets
from batchexports.exports import encryption


class BatchExportDestination(models.Model):
    """Where an export writes: a type and its config; the config's secrets are encrypted apart."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=64)
    config = models.JSONField(default=dict, blank=True)
    encrypted_secrets = models.TextField(blank=True, default="")
    integration = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.type} destination {self.id}"

    def secret_paths(self) -> tuple[tuple[str, ...], ...]:
        return registry.get(self.type).secret_fields

    def full_config(self) -> dict[str, Any]:
        """The config with its secrets decrypted: for sinks and test steps, never for responses."""
        return deep_merge(self.config or {}, encryption.decrypt_json(self.encrypted_secrets))

    def secrets(self) -> dict[str, Any]:
        return encryption.decrypt_json(self.encrypted_secrets)

    def set_full_config(self, config: dict[str, Any]) -> None:
        public, secret = split_secrets(config, self.secret_paths())
        self.config = public
        self.encrypted_secrets = encryption.encrypt_json(secret)


class BatchExport(models.Model):
    class Model(models.TextChoices):
        EVENTS = "events", "Events"
        PERSONS = "persons", "Persons"
        SESSIONS = "sessions", "Sessions"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batch_exports")
    name = models.TextField()
    model = models.CharField(max_length=64, choices=Model.choices, default=Model.EVENTS)
    destination = models.OneToOneField(BatchExportDestination, on_delete=models.CASCADE, related_name="batch_export")
    interval = models.CharField(max_length=64, choices=[(i, i) for i in INTERVALS], default="hour")
    paused = models.BooleanField(default=False)
    deleted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_updated_at = models.DateTimeField(auto_now=True)
    last_paused_at = models.DateTimeField(null=True, blank=True)
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    hogql_query = models.TextField(blank=True, default="")
    schema = models.JSONField(null=True, blank=True)
    filters = models.JSONField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # Seconds after the start of a day (day) or of Sunday (week), as PostHog stores it.
    interval_offset = models.IntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["team", "deleted", "-created_at"])]

    def __str__(self) -> str:
        return self.name


class BatchExportRun(models.Model):
    """One execution of an export for one data interval: a scheduled run, a backfill's run or a retry.

    An interval run again gets a row of its own, so earlier attempts stay visible with their own
    durations; the destination is still written once per interval (deterministic keys, merges).
    """

    class Status(models.TextChoices):
        CANCELLED = "Cancelled", "Cancelled"
        COMPLETED = "Completed", "Completed"
        CONTINUED_AS_NEW = "ContinuedAsNew", "Continued As New"
        FAILED = "Failed", "Failed"
        FAILED_RETRYABLE = "FailedRetryable", "Failed Retryable"
        FAILED_BILLING = "FailedBilling", "Failed Billing"
        TERMINATED = "Terminated", "Terminated"
        TIMEDOUT = "TimedOut", "Timedout"
        RUNNING = "Running", "Running"
        STARTING = "Starting", "Starting"

    ACTIVE_STATUSES = (Status.STARTING, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch_export = models.ForeignKey(BatchExport, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=64, choices=Status.choices)
    records_completed = models.IntegerField(null=True, blank=True)
    # Records a destination refused one by one (PostHog's field); none of our sinks drops single
    # records, so it stays null.
    records_failed = models.IntegerField(null=True, blank=True)
    records_total_count = models.IntegerField(null=True, blank=True)
    bytes_exported = models.BigIntegerField(null=True, blank=True)
    # The receipt of what a completed run read from the source (`core/receipts.py`): null for runs
    # before receipts and rows without their identity columns.
    receipt_rows = models.BigIntegerField(null=True, blank=True)
    receipt_checksum = models.CharField(max_length=16, null=True, blank=True)
    latest_error = models.TextField(null=True, blank=True)
    data_interval_start = models.DateTimeField(null=True, blank=True)
    data_interval_end = models.DateTimeField()
    cursor = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_updated_at = models.DateTimeField(auto_now=True)
    backfill = models.ForeignKey(
        "BatchExportBackfill", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # The Temporal workflow running it: what cancelling the run cancels. Not part of the API.
    workflow_id = models.CharField(max_length=400, null=True, blank=True)
    # The Temporal run of that workflow: with workflow_id, what makes recording a run idempotent
    # (an activity retried after its commit finds its row instead of adding one). Not part of the API.
    workflow_run_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["batch_export", "-created_at"]),
            models.Index(fields=["workflow_id", "workflow_run_id"]),
            models.Index(fields=["batch_export", "data_interval_start"]),
        ]

    def __str__(self) -> str:
        return f"run {self.id} [{self.data_interval_start}, {self.data_interval_end}) {self.status}"


class BatchExportBackfill(models.Model):
    class Status(models.TextChoices):
        CANCELLED = "Cancelled", "Cancelled"
        COMPLETED = "Completed", "Completed"
        CONTINUED_AS_NEW = "ContinuedAsNew", "Continued As New"
        FAILED = "Failed", "Failed"
        FAILED_RETRYABLE = "FailedRetryable", "Failed Retryable"
        TERMINATED = "Terminated", "Terminated"
        TIMEDOUT = "TimedOut", "Timedout"
        RUNNING = "Running", "Running"
        STARTING = "Starting", "Starting"

    ACTIVE_STATUSES = (Status.STARTING, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batch_export_backfills")
    batch_export = models.ForeignKey(BatchExport, on_delete=models.CASCADE, related_name="backfills")
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=64, choices=Status.choices, default=Status.STARTING)
    # Known once the range is fixed (at creation, or when the engine clamps an open start).
    total_runs = models.IntegerField(null=True, blank=True)
    # As PostHog reports it: the source's count of the range when the backfill starts (an
    # estimate), then the records its runs exported when it ends.
    total_records_count = models.BigIntegerField(null=True, blank=True)
    # The start the engine used when it moved `start_at` (or an open start) to the earliest data.
    adjusted_start_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["batch_export", "-created_at"])]

    def __str__(self) -> str:
        return f"backfill {self.id} [{self.start_at}, {self.end_at}) {self.status}"


class BatchExportLogEntry(models.Model):
    class Level(models.TextChoices):
        DEBUG = "DEBUG"
        LOG = "LOG"
        INFO = "INFO"
        WARNING = "WARNING"
        ERROR = "ERROR"

    team_id = models.BigIntegerField()
    batch_export = models.ForeignKey(BatchExport, on_delete=models.CASCADE, related_name="log_entries")
    run_id = models.UUIDField(null=True, blank=True)
    timestamp = models.DateTimeField(db_index=True)
    level = models.CharField(max_length=16, choices=Level.choices, default=Level.INFO)
    message = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["batch_export", "-timestamp"]), models.Index(fields=["run_id"])]

    def __str__(self) -> str:
        return f"{self.timestamp} {self.level} {self.message[:80]}"
