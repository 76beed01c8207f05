"""Listener filters: restrict which stored notifications a listener process takes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from django.db.models import Q


@runtime_checkable
class ListenerFilterProvider(Protocol):
    """Named by ``PGPUBSUB_LISTENER_FILTER``; its Q filters the ``Notification`` rows taken.

    Example::

        class TenantFilter:
            def get_filter(self) -> Q:
                return Q(payload__context__tenant=os.environ["TENANT"])
    """

    def get_filter(self) -> Q: ...
