"""Pagination of runs and backfills (cursor), as PostHog pages them."""

from rest_framework.pagination import CursorPagination


class RunsCursorPagination(CursorPagination):
    page_size = 100
    ordering = "-created_at"


class BackfillsCursorPagination(CursorPagination):
    page_size = 50
    ordering = "-created_at"
