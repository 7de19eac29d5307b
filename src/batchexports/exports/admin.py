"""Django admin for batch exports: read and fix metadata; secrets stay encrypted and hidden."""

from django.contrib import admin

from batchexports.exports.models import (
    BatchExport,
    BatchExportBackfill,
    BatchExportDestination,
    BatchExportLogEntry,
    BatchExportRun,
)


@admin.register(BatchExport)
class BatchExportAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "model", "interval", "paused", "deleted", "created_at")
    list_filter = ("interval", "model", "paused", "deleted")
    search_fields = ("name", "id")
    raw_id_fields = ("destination",)


@admin.register(BatchExportDestination)
class BatchExportDestinationAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "created_at")
    list_filter = ("type",)
    exclude = ("encrypted_secrets",)


@admin.register(BatchExportRun)
class BatchExportRunAdmin(admin.ModelAdmin):
    list_display = ("id", "batch_export", "status", "data_interval_start", "data_interval_end", "records_completed")
    list_filter = ("status",)
    raw_id_fields = ("batch_export", "backfill")


@admin.register(BatchExportBackfill)
class BatchExportBackfillAdmin(admin.ModelAdmin):
    list_display = ("id", "batch_export", "status", "start_at", "end_at", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("batch_export", "team")


@admin.register(BatchExportLogEntry)
class BatchExportLogEntryAdmin(admin.ModelAdmin):
    list_display = ("timestamp", "batch_export", "level", "message")
    list_filter = ("level",)
    search_fields = ("message",)
    raw_id_fields = ("batch_export",)
