"""Models of the benchmark app.

``Item`` and ``PlainItem`` have the same shape; only ``Item`` has a pgpubsub trigger (its
post_insert listener installs it), so the two compare the cost of writing with and without.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone


class Item(models.Model):
    """Published on the lockable ``ItemChannel``: each insert is one stored message."""

    name = models.CharField(max_length=100)
    quantity = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)


class PlainItem(models.Model):
    """The same columns as ``Item``, without any trigger."""

    name = models.CharField(max_length=100)
    quantity = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)


class Effect(models.Model):
    """One row per handled ``Item`` message, written by its listener.

    Times are ``time.time()`` seconds, comparable with the writer's commit times because
    the writer and the workers share the machine's clock. There is deliberately no unique
    constraint on ``item_id``: a duplicate delivery must show up as a duplicate row.
    """

    item_id = models.BigIntegerField(db_index=True)
    pid = models.IntegerField()
    started_at = models.FloatField()
    finished_at = models.FloatField()


class FanoutReport(models.Model):
    """Written once per listening process at the last message of a fan-out run."""

    run = models.IntegerField()
    pid = models.IntegerField()
    received = models.IntegerField()
    first_at = models.FloatField()
    last_at = models.FloatField()
