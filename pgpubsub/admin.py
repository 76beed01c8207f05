"""Django admin: stored notifications (see and act on failures, look back at handled ones kept
by ``PGPUBSUB_KEEP_HANDLED``), the batches in flight, and the stored tasks of pgpubsub.tasks
(retry the failed ones)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from pgpubsub.models import STATE_FILTERS, InFlightBatch, Notification, State
from pgpubsub.queue import requeue_now
from pgpubsub.registry import registry
from pgpubsub.tasks.models import StoredTask, StoredTaskQuerySet
from pgpubsub.tasks.store import retry_failed as retry_failed_tasks

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Notification]
    _InFlightAdmin = admin.ModelAdmin[InFlightBatch]
else:  # ModelAdmin is generic for the type checker only
    _ModelAdmin = _InFlightAdmin = admin.ModelAdmin


class _EstimatedCountPaginator(Paginator):
    """Uses PostgreSQL's row estimate for an unfiltered table instead of COUNT(*).

    Counting a table of millions of rows on every page view is slow; the estimate is
    exact enough for page links.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            table = queryset.model._meta.db_table
            with connections[queryset.db].cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [table])
                row = cursor.fetchone()
            if row and row[0] > 10_000:
                return int(row[0])
        return super().count


class _StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state.value, state.value.capitalize()) for state in State]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in {state.value for state in State}:
            return queryset.filter(STATE_FILTERS[State(value)])
        return queryset


class _ChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return sorted((c.listen_safe_name(), c.name()) for c in registry.channels())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(channel=value) if value else queryset


@admin.register(Notification)
class NotificationAdmin(_ModelAdmin):
    list_display = (
        "id",
        "channel_name",
        "status_label",
        "attempts",
        "age",
        "handled_at",
        "error_summary",
    )
    # Handled messages by time: ranges (today, past 7 days...) read through the partial index
    # of handled rows; a date hierarchy would read every distinct date of the table per page.
    list_filter = (_StatusFilter, _ChannelFilter, ("handled_at", admin.DateFieldListFilter))
    search_fields = ("=id",)
    ordering = ("-id",)
    paginator = _EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = ("retry_now",)
    readonly_fields = (
        "id",
        "channel_name",
        "status_label",
        "attempts",
        "created_at",
        "available_at",
        "last_attempt_at",
        "failed_at",
        "handled_at",
        "handled_by",
        "original",
        "key_order",
        "db_version",
        "formatted_payload",
        "formatted_error",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="channel", ordering="channel")
    def channel_name(self, obj: Notification) -> str:
        return registry.label(obj.channel)

    @admin.display(description="status")
    def status_label(self, obj: Notification) -> str:
        return str(obj.status)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Notification) -> str:
        return timesince(obj.created_at, timezone.now()) if obj.created_at else "-"

    @admin.display(description="last error")
    def error_summary(self, obj: Notification) -> str:
        return obj.error_summary()

    @admin.display(description="ordering key")
    def key_order(self, obj: Notification) -> str:
        if obj.ordering_key is None:
            return "-"
        if obj.failed_at is None:
            return obj.ordering_key
        return (
            f"{obj.ordering_key}: as a dead letter it no longer holds back its key, so later "
            "messages of this key were handled after it (retrying it now runs it after them)."
        )

    @admin.display(description="replay of")
    def original(self, obj: Notification) -> str:
        """For a copy queued by ``pgpubsub replay``: its original, linked while it is stored."""
        if obj.replay_of is None:
            return "-"
        if not Notification.objects.using(obj._state.db).filter(pk=obj.replay_of).exists():
            return f"{obj.replay_of} (no longer stored)"
        url = reverse("admin:pgpubsub_notification_change", args=[obj.replay_of])
        return format_html('<a href="{}">{}</a>', url, obj.replay_of)

    @admin.display(description="payload")
    def formatted_payload(self, obj: Notification) -> str:
        text = json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="error traceback")
    def formatted_error(self, obj: Notification) -> str:
        return format_html("<pre>{}</pre>", obj.last_error) if obj.last_error else "-"

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Re-queueing changes rows: it needs the change permission, not just view."""
        return request.user.has_perm("pgpubsub.change_notification")

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        requeued = requeue_now(ids, using=queryset.db)
        self.message_user(
            request, f"{requeued} notification(s) will be processed now.", messages.SUCCESS
        )


@admin.register(InFlightBatch)
class InFlightBatchAdmin(_InFlightAdmin):
    """Read-only: the batches workers run now, and those of workers that ended mid-batch.

    A record older than your slowest batch belongs to a worker that died; the next worker
    that claims its messages settles it (docs: "Messages that kill their worker").
    """

    list_display = ("id", "worker", "started_at", "message_count", "running_id")
    ordering = ("-id",)
    readonly_fields = ("id", "worker", "started_at", "running_id", "notifications")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a record is what lets the next worker charge a crash to its message

    @admin.display(description="messages")
    def message_count(self, obj: InFlightBatch) -> int:
        return len(obj.notification_ids)

    @admin.display(description="notifications")
    def notifications(self, obj: InFlightBatch) -> str:
        """Each id, linked to its stored notification while it exists."""
        stored = set(
            Notification.objects.using(obj._state.db)
            .filter(pk__in=obj.notification_ids)
            .values_list("pk", flat=True)
        )
        return format_html_join(
            ", ",
            "{}",
            (
                (
                    format_html(
                        '<a href="{}">{}</a>',
                        reverse("admin:pgpubsub_notification_change", args=[pk]),
                        pk,
                    )
                    if pk in stored
                    else pk,
                )
                for pk in obj.notification_ids
            ),
        )


if TYPE_CHECKING:
    _TaskAdminBase = admin.ModelAdmin[StoredTask]
else:
    _TaskAdminBase = admin.ModelAdmin


@admin.register(StoredTask)
class StoredTaskAdmin(_TaskAdminBase):
    """Tasks of Django's tasks framework stored by pgpubsub.tasks, and their results; FAILED
    ones (dead letters) can be retried."""

    list_display = (
        "id",
        "task_path",
        "status",
        "queue_name",
        "priority",
        "attempts",
        "enqueued_at",
        "error_summary",
    )
    list_filter = ("status", "backend", "queue_name")
    search_fields = ("=id", "task_path")
    ordering = ("-id",)
    paginator = _EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = ("retry_failed_tasks",)
    readonly_fields = (
        "id",
        "backend",
        "queue_name",
        "task_path",
        "priority",
        "status",
        "attempts",
        "enqueued_at",
        "run_after",
        "available_at",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "worker_ids",
        "formatted_arguments",
        "return_value",
        "formatted_errors",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="last error")
    def error_summary(self, obj: StoredTask) -> str:
        return obj.error_summary()

    @admin.display(description="arguments")
    def formatted_arguments(self, obj: StoredTask) -> str:
        text = json.dumps({"args": obj.args, "kwargs": obj.kwargs}, indent=2, ensure_ascii=False)
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="errors")
    def formatted_errors(self, obj: StoredTask) -> str:
        if not obj.errors:
            return "-"
        return format_html_join(
            "", "<pre>{}</pre>", ((error.get("traceback", ""),) for error in obj.errors)
        )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Re-queueing changes rows: it needs the change permission, not just view."""
        return request.user.has_perm("pgpubsub.change_storedtask")

    @admin.action(description="Retry failed tasks now", permissions=["retry"])
    def retry_failed_tasks(self, request: HttpRequest, queryset: StoredTaskQuerySet) -> None:
        ids = list(queryset.failed().values_list("id", flat=True))
        requeued = retry_failed_tasks(using=queryset.db, ids=ids) if ids else 0
        self.message_user(
            request, f"{requeued} failed task(s) will run again now.", messages.SUCCESS
        )
