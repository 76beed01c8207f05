"""Models of the example app: authors and their posts, plus models the tests exercise.

``Ledger`` and ``LedgerEntry`` live in the second database, "other" (see ``testapp.routers``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.utils import timezone


class Author(models.Model):
    name = models.CharField(max_length=200)
    bio = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Post(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="posts")
    title = models.CharField(max_length=200)
    content = models.TextField(blank=True, default="")
    read_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.title


class Media(models.Model):
    """Custom primary key, db_column names, exact decimals, JSON and timestamps."""

    key = models.UUIDField(primary_key=True, default=uuid.uuid4, db_column="media_key")
    owner = models.ForeignKey(
        Author, null=True, blank=True, on_delete=models.SET_NULL, db_column="owner_ref"
    )
    title = models.CharField(max_length=200, db_column="media_title")
    price = models.DecimalField(max_digits=30, decimal_places=10, default=Decimal("0"))
    ratio = models.FloatField(default=0.0)
    tags = models.JSONField(default=dict, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    released_on = models.DateField(null=True, blank=True)
    is_public = models.BooleanField(default=True)


class Parent(models.Model):
    name = models.CharField(max_length=100)
    born = models.DateField(null=True, blank=True)


class Child(Parent):
    """Multi-table inheritance: ``name`` and ``born`` live in the parent's table."""

    toy = models.CharField(max_length=100)


class ListenerEvent(models.Model):
    """What a listener did: the example's audit log and what the tests count."""

    listener = models.CharField(max_length=100)
    operation = models.CharField(max_length=20, blank=True, default="")
    object_key = models.CharField(max_length=100, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)


class Ledger(models.Model):
    """A balance kept by a listener, in the "other" database (the multi-database example)."""

    name = models.CharField(max_length=100)
    balance = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("0"))
    last_applied_by = models.IntegerField(default=0)


class LedgerEntry(models.Model):
    """Each new entry is added to its ledger's balance, exactly once."""

    ledger = models.ForeignKey(Ledger, on_delete=models.CASCADE, related_name="entries")
    amount = models.DecimalField(max_digits=20, decimal_places=2)
