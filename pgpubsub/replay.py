"""Replay: new copies of handled (kept) or dead-letter messages, queued to run again.

Each copy is a new stored message of the same channel, with the original's payload, ordering
key and ``db_version``, and ``replay_of`` set to the original's id (a copy of a copy names the
first original, so that ``current_message().replay_of`` is one stable key). Workers take it
like any new message: the transaction that queues the copies rings the channel's doorbell.

A message whose payload no longer decodes with the channel class as it is now (a field whose
type changed, or one added without a default) is not copied: the copy would fail on every
attempt. It is reported by id with the decoding error, which names the field; the others are
queued.

Example::

    result = replay(OrderPaid, since=datetime(2026, 12, 1, tzinfo=UTC))
    print(f"queued {len(result.queued)}; cannot replay {result.undecodable}")
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast

from pgpubsub import queue
from pgpubsub.channel import BaseChannel
from pgpubsub.exceptions import PayloadError, ReplayError
from pgpubsub.models import Notification
from pgpubsub.processing import decode_payload

#: Rows read, checked and copied at a time.
_CHUNK = 1_000


@dataclass(frozen=True)
class Undecodable:
    """A message that was not replayed: its payload no longer fits its channel."""

    id: int
    #: The decoding error, naming the field (``Field 'count' of channel ... holds 'x' ...``).
    reason: str

    def __str__(self) -> str:
        return f"Notification {self.id} cannot be replayed: {self.reason}"


@dataclass
class ReplayResult:
    """What a replay found and did."""

    #: Messages that matched (handled or dead letters of the channel, in the time window).
    matched: int = 0
    #: The ids of the copies queued (none for a dry run).
    queued: list[int] = field(default_factory=list)
    #: The ids of the originals that can be replayed (the copies of a real run, in order).
    replayable: list[int] = field(default_factory=list)
    #: The matching messages that were not copied.
    undecodable: list[Undecodable] = field(default_factory=list)


def replay(
    channel: type[BaseChannel],
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    ids: Sequence[int] = (),
    dry_run: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> ReplayResult:
    """Queue copies of ``channel``'s handled or dead-letter messages; see the module.

    Arguments:
        channel: a lockable channel.
        since, until: only messages handled (or marked failed) at or after ``since`` and
            before ``until``, aware datetimes.
        ids: only these messages; each must be a handled or dead-letter message of ``channel``.
        dry_run: check and count only; queue nothing.
        using: the database alias.

    Raises:
        ReplayError: the channel is not lockable, ``since`` is not before ``until``, an id
            names no handled or dead-letter message of the channel, or nothing matches.
    """
    _check_request(channel, since, until)
    originals = _originals(channel, since, until, using)
    if ids:
        originals = originals.filter(pk__in=ids)
        _check_ids(channel, originals, ids, _window(since, until))
    result = ReplayResult()
    with transaction.atomic(using=using):
        for rows in _chunks(originals):
            _copy(channel, rows, result, dry_run=dry_run, using=using)
        if not result.matched:
            raise ReplayError(
                f"No handled or dead-letter message of channel {channel.name()} matches"
                f"{_window(since, until)}: handled messages are kept only with "
                "PGPUBSUB_KEEP_HANDLED set, and for that period."
            )
        if result.queued:
            queue.ring_doorbells([channel.listen_safe_name()], using=using)
    return result


def _check_request(
    channel: type[BaseChannel],
    since: datetime.datetime | None,
    until: datetime.datetime | None,
) -> None:
    if not channel.lock_notifications:
        raise ReplayError(
            f"Channel {channel.name()} is not lockable: its messages are not stored, so there "
            "is nothing to replay."
        )
    if since is not None and until is not None and since >= until:
        raise ReplayError(
            f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})."
        )


def _check_ids(
    channel: type[BaseChannel],
    originals: QuerySet[Notification],
    ids: Sequence[int],
    window: str,
) -> None:
    missing = sorted(set(ids) - set(originals.values_list("pk", flat=True)))
    if missing:
        raise ReplayError(
            f"No handled or dead-letter message of channel {channel.name()} has id "
            f"{', '.join(map(str, missing))}{window}: see the admin, or "
            "`manage.py pgpubsub failed`, for the ids."
        )


def _copy(
    channel: type[BaseChannel],
    rows: list[tuple[int, str]],
    result: ReplayResult,
    *,
    dry_run: bool,
    using: str,
) -> None:
    """Check a chunk of originals and, unless ``dry_run``, queue copies of the good ones."""
    result.matched += len(rows)
    good = []
    for pk, payload_text in rows:
        problem = _decoding_problem(channel, payload_text)
        if problem is None:
            good.append(pk)
        else:
            result.undecodable.append(Undecodable(pk, problem))
    result.replayable.extend(good)
    if good and not dry_run:
        result.queued.extend(queue.copy_for_replay(good, channel, using=using))


def _originals(
    channel: type[BaseChannel],
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    using: str,
) -> QuerySet[Notification]:
    """The channel's handled and dead-letter messages, handled (or failed) in the window."""
    names = [channel.listen_safe_name(), *channel.stored_aliases()]
    # One range per column, so that the handled ones are read through their index.
    done = Q()
    for column in ("handled_at", "failed_at"):
        window = Q(**{f"{column}__isnull": False})
        if since is not None:
            window &= Q(**{f"{column}__gte": since})
        if until is not None:
            window &= Q(**{f"{column}__lt": until})
        done |= window
    return Notification.objects.using(using).filter(done, channel__in=names)


def _chunks(originals: QuerySet[Notification]) -> Iterator[list[tuple[int, str]]]:
    """(id, payload text) of ``originals``, oldest first, :data:`_CHUNK` at a time."""
    rows = (
        originals.order_by("id")
        .annotate(payload_text=Cast("payload", TextField()))
        .values_list("id", "payload_text")
    )
    chunk: list[tuple[int, str]] = []
    for row in rows.iterator(chunk_size=_CHUNK):
        chunk.append(row)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decoding_problem(channel: type[BaseChannel], payload_text: str) -> str | None:
    """Why a payload cannot be handled by ``channel`` as it is now, or None."""
    try:
        kwargs = channel.callback_kwargs(decode_payload(channel, payload_text))
    except (PayloadError, ValueError) as exc:
        return str(exc)
    missing = [name for name in channel.callback_parameters() if name not in kwargs]
    if missing:
        return (
            f"it has no value for field {missing[0]!r} of channel {channel.name()}, which was "
            "added without a default after it was sent."
        )
    return None


def _window(since: datetime.datetime | None, until: datetime.datetime | None) -> str:
    parts = []
    if since is not None:
        parts.append(f"from {since.isoformat()}")
    if until is not None:
        parts.append(f"until {until.isoformat()}")
    return f" (handled or failed {' '.join(parts)})" if parts else ""
