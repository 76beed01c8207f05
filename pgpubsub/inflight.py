"""Which stored messages a worker is running, recorded outside the batch's transaction.

When a worker process dies mid-batch (the out-of-memory killer, ``kill -9``, a crash in
native code), PostgreSQL rolls its transaction back: nothing written inside it can count
that attempt. A message that kills its worker would then be retried forever, holding back
the rest of its batch each time. So a worker records each batch it claimed in
``pgpubsub_inflight`` through a connection of its own (autocommit) before running any
callback, and deletes the record in the batch's transaction. A record that names a message
another worker could claim has outlived its batch, hence its worker:

- the claimant runs that batch's messages one by one, noting which one is running;
- the message a record names as running is charged one attempt, as if its callback had
  raised: retried after the usual delay, marked failed after ``PGPUBSUB_MAX_ATTEMPTS``.

A record also outlives its batch when the worker is alive but its batch's connection was cut
(``pg_terminate_backend``, a network failure): PostgreSQL rolled the batch back, nothing of it
took effect, and the message that was running is not to blame. Such a worker is still
connected through the connection that wrote the record (or has reconnected with it), under an
``application_name`` unique to the process (:class:`WorkerName`): its record is left alone and
the message is not charged. A worker that is no longer connected at all either died or lost
every connection at once; its running message is charged, with an error that says both.

A worker that stops itself mid-batch on purpose (its message ran past its time limit,
:mod:`pgpubsub.timelimit`) first writes why into its record (:meth:`Journal.stopped`): the
message is charged with that reason, whether or not the worker looks connected yet.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from django.db import connections

from pgpubsub.models import WAITING_SQL, InFlightBatch, Notification, quoted_table


class AutocommitConnection(Protocol):
    """A connection whose every statement commits at once (the worker's LISTEN connection)."""

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


#: Separates the worker's label from why the worker stopped itself, in the ``worker`` column
#: of a record (which holds both: a column of its own would need a migration).
_STOPPED = "\nStopped: "


@dataclass(frozen=True)
class WorkerName:
    """How a worker process is named in its in-flight records and on its own connection.

    ``connection`` (the ``application_name`` of the connection that writes the records) is
    unique to the process, thanks to a random part: a claimant finds out from
    ``pg_stat_activity`` whether the worker of a record is still connected. ``label`` starts
    with it and adds what people want to read (the host, the start time).
    """

    connection: str
    label: str

    @classmethod
    def for_this_process(cls, prefix: str) -> WorkerName:
        """A new name for this process (call it once per process)."""
        connection = f"{prefix} {os.getpid()} {os.urandom(3).hex()}"
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(connection, f"{connection} on {socket.gethostname()}, started {started}")

    @staticmethod
    def connection_of(label: str) -> str:
        """The connection name a record's label starts with."""
        return label.split(" on ", 1)[0]


@dataclass(frozen=True)
class LeftBehind:
    """The record of a batch whose worker ended before the batch did."""

    id: int
    notification_ids: tuple[int, ...]
    #: The message whose callbacks were running, when known.
    running_id: int | None
    worker: str
    started_at: datetime
    #: Why the worker stopped itself in the middle of the batch (None: it did not say).
    stopped_because: str | None = None

    @classmethod
    def from_row(
        cls, pk: int, ids: Sequence[int], running_id: int | None, worker: str, started: datetime
    ) -> LeftBehind:
        label, _, reason = worker.partition(_STOPPED)
        return cls(pk, tuple(ids), running_id, label, started, reason or None)


#: Makes the statement's own transaction commit asynchronously (``SET LOCAL``, in one
#: statement, so that it also works through a transaction-pooling pgbouncer). Safe here: the
#: batch's commit, synchronous, flushes the write-ahead log up to the record's commit, and a
#: record lost in a server crash was the record of a batch that the crash rolled back.
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"


class BatchJournal(Protocol):
    """Where a batch processor records the batches it runs (see the module's docstring)."""

    def begin(self, notification_ids: Sequence[int]) -> int | None:
        """Record a claimed batch before its callbacks run; return the record's id."""
        ...

    def running(self, record_id: int, notification_id: int) -> None:
        """Note the message whose callbacks run now."""
        ...

    def discard(self, record_id: int) -> None:
        """Delete the record of a batch that was rolled back."""
        ...


class NullJournal:
    """Records nothing: for processing in-process, where no other worker takes over."""

    def begin(self, notification_ids: Sequence[int]) -> int | None:
        return None

    def running(self, record_id: int, notification_id: int) -> None:
        pass

    def discard(self, record_id: int) -> None:
        pass


class Journal:
    """Writes a worker's in-flight records, committed independently of its batches.

    ``worker`` names the worker process uniquely (pid, host and start time): records are
    told apart by it, and shown to people in errors and logs. The records go through the
    connection last given to :meth:`attach` (the worker's LISTEN connection, renewed on
    each reconnect).
    """

    def __init__(self, worker: str, using: str) -> None:
        self._connection: AutocommitConnection | None = None
        self._worker = worker
        self._table = quoted_table(InFlightBatch, using)

    def attach(self, connection: AutocommitConnection) -> None:
        """Write through ``connection`` from now on, first deleting this worker's own old
        records (left when its connections were cut: it did not die)."""
        self._connection = connection
        self.discard_own()

    def detach(self) -> None:
        """Forget the connection (it was lost): batches run without records until the next
        :meth:`attach`."""
        self._connection = None

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._connection is None:
            return []
        return self._connection.execute(sql, params)

    def begin(self, notification_ids: Sequence[int]) -> int | None:
        """Record a claimed batch before its callbacks run; return the record's id."""
        if self._connection is None:
            return None
        # A batch of one message has no doubt about which message was running.
        running = notification_ids[0] if len(notification_ids) == 1 else None
        rows = self._connection.execute(
            f"INSERT INTO {self._table} (notification_ids, running_id, worker, started_at) "
            f"SELECT %s::bigint[], %s::bigint, %s, now() FROM {_ASYNC_COMMIT} RETURNING id",
            [list(notification_ids), running, self._worker],
        )
        return int(rows[0][0])

    def running(self, record_id: int, notification_id: int) -> None:
        """Note the message whose callbacks run now (batches run one message at a time)."""
        self._execute(
            f"UPDATE {self._table} SET running_id = %s FROM {_ASYNC_COMMIT} WHERE id = %s",
            [notification_id, record_id],
        )

    def discard(self, record_id: int) -> None:
        """Delete a record whose batch was rolled back (its messages were not run)."""
        self._execute(f"DELETE FROM {self._table} USING {_ASYNC_COMMIT} WHERE id = %s", [record_id])

    def stopped(self, record_id: int, notification_id: int, reason: str) -> None:
        """Note, before this worker ends itself mid-batch, which message was running and why
        the worker stops (committed at once: the worker exits right after)."""
        self._execute(
            f"UPDATE {self._table} SET running_id = %s, worker = worker || %s WHERE id = %s",
            [notification_id, _STOPPED + reason, record_id],
        )

    def end_session(self, backend_pid: int) -> None:
        """End the database session of this worker's batch (``backend_pid``), so that a query
        still running in it does not hold the batch's locks after the worker exits."""
        self._execute("SELECT pg_terminate_backend(%s)", [backend_pid])

    def discard_own(self) -> int:
        """Delete this worker's records; return how many there were.

        Called when the worker (re)connects: records it left when its connections were cut
        (a server restart, a network failure) are not the mark of a worker that died.
        """
        rows = self._execute(
            f"DELETE FROM {self._table} USING {_ASYNC_COMMIT} WHERE worker = %s RETURNING id",
            [self._worker],
        )
        return len(rows)


def left_behind(
    notification_ids: Sequence[int], *, using: str, own_record: int | None = None
) -> list[LeftBehind]:
    """Records, other than ``own_record``, naming any of ``notification_ids`` (just claimed).

    The worker of such a record no longer holds its batch's locks, and its transaction
    deletes the record at commit: the record outlived its batch.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT id, notification_ids, running_id, worker, started_at "
            f"FROM {quoted_table(InFlightBatch, using)} "
            "WHERE notification_ids && %s::bigint[] AND id IS DISTINCT FROM %s ORDER BY id",
            [list(notification_ids), own_record],
        )
        rows = cursor.fetchall()
    return [LeftBehind.from_row(*row) for row in rows]


def connected(workers: Iterable[str], *, using: str) -> set[str]:
    """The labels among ``workers`` whose worker process has a connection to the database
    open under its name (:class:`WorkerName`): it is alive, whatever happened to its batch."""
    by_connection = {WorkerName.connection_of(label): label for label in workers}
    if not by_connection:
        return set()
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT application_name FROM pg_stat_activity "
            "WHERE application_name = ANY(%s)",
            [list(by_connection)],
        )
        return {by_connection[name] for (name,) in cursor.fetchall()}


def prune(*, using: str) -> int:
    """Delete records none of whose messages is still queued (deleted, failed or handled)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {quoted_table(InFlightBatch, using)} AS record WHERE NOT EXISTS ("
            f"SELECT 1 FROM {quoted_table(Notification, using)} AS message "
            f"WHERE message.id = ANY(record.notification_ids) AND {WAITING_SQL})"
        )
        return int(cursor.rowcount)
