"""A disk that flushes slowly, for the connection of the calling thread: every synchronous
commit waits SLOW_FLUSH_MS first (PostgreSQL's commit_delay, at most 100 ms, with
commit_siblings 0 so that it applies to every commit): far slower than any disk in use."""

from __future__ import annotations

import time

from django.db import connection

SLOW_FLUSH_MS = 100


def slow_disk_on() -> float:
    """Make this thread's connection flush slowly; seconds a synchronous commit now takes."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET commit_delay = {SLOW_FLUSH_MS * 1000}")
        cursor.execute("SET commit_siblings = 0")
        started = time.perf_counter()
        # A write (a message in the write-ahead log, in a transaction): its commit is flushed.
        cursor.execute("SELECT pg_logical_emit_message(true, 'slow-disk', '')")
    return time.perf_counter() - started


def slow_disk_off() -> None:
    with connection.cursor() as cursor:
        cursor.execute("RESET commit_delay")
        cursor.execute("RESET commit_siblings")
