"""Cursor pagination for the API's lists and JSON exports.

A cursor (not a page number) keeps pages stable while rows are added, and reads a page with
an index range scan however deep the client pages (no OFFSET). Querysets are paged by a
unique, immutable key: the row id, or the task id for K-wise rankings (all rows of one task,
raw and consensus, stay on one page).
"""

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class TaskCursorPagination(IdCursorPagination):
    """Pages a `.values("task_id").distinct()` queryset: each page is a list of task ids."""

    ordering = "task_id"
    page_size = 50
    max_page_size = 500
