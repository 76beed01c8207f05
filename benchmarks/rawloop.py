"""The raw ceiling: a minimal hand-written claim-and-delete loop on pgpubsub_notification.

Run by ``run.py`` (scenario ``raw_ceiling``), never imported by Django code. Reads its
connection as JSON on the command line, prints ``ready``, waits for ``go`` on stdin, then
claims rows of one channel with ``FOR UPDATE SKIP LOCKED`` and deletes them, ``--batch`` rows
per transaction, until none is left; it prints one JSON line with what it did.

With ``--effect`` it also inserts one ``benchapp_effect`` row per message, the work the
benchmark's pgpubsub listener does, for a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psycopg2

CLAIM = """
SELECT id, payload::text FROM pgpubsub_notification
WHERE channel = %s AND failed_at IS NULL AND available_at <= now()
ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
DELETE_ONE = "DELETE FROM pgpubsub_notification WHERE id = %s"
DELETE_MANY = "DELETE FROM pgpubsub_notification WHERE id = ANY(%s)"
EFFECT = (
    "INSERT INTO benchapp_effect (item_id, pid, started_at, finished_at) VALUES (%s, %s, %s, %s)"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection", required=True, help="psycopg2.connect() keywords, JSON")
    parser.add_argument("--channel", required=True, help="PostgreSQL channel name")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--effect", action="store_true")
    args = parser.parse_args()

    connection = psycopg2.connect(**json.loads(args.connection))
    pid = os.getpid()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    processed = 0
    finished_at = time.time()
    with connection.cursor() as cursor:
        while True:
            cursor.execute(CLAIM, (args.channel, args.batch))
            rows = cursor.fetchall()
            if not rows:
                connection.commit()
                break
            if args.effect:
                for _, payload in rows:
                    item_id = json.loads(payload)["new"]["id"]
                    cursor.execute(EFFECT, (item_id, pid, time.time(), time.time()))
            if args.batch == 1:
                cursor.execute(DELETE_ONE, (rows[0][0],))
            else:
                cursor.execute(DELETE_MANY, ([pk for pk, _ in rows],))
            connection.commit()
            processed += len(rows)
            finished_at = time.time()
    connection.close()
    print(json.dumps({"pid": pid, "processed": processed, "finished_at": finished_at}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
