"""Django's PostgreSQL backend, with the pool's check of a connection before lending it.

psycopg_pool's own check (the one Django installs with CONN_HEALTH_CHECKS) sends an empty query
on every borrow: a round trip, and a chat socket borrows a connection twice for every answer,
cached ones included (its event, then its answer). Profiling one Daphne process serving cached
answers to 50 sockets (py-spy), about a sixth of its samples were in that check.

A connection lent moments ago is instead checked without a trip: a server that restarts, ends
the backend or closes an idle session sends a message and closes the socket, so an idle
connection with anything to read is suspect and gets the full check (which fails on a closed
one, and the pool opens another). What only a trip can find (a network path that died without
a word) is looked for once a connection has not been lent for DATABASE_POOL_CHECK_IDLE_SECONDS;
a statement that still meets a dead connection is run again on a fresh one by the callers that
retry (chatbot.pipeline.db_retrying).
"""

from __future__ import annotations

import select
import time
from typing import Any
from weakref import WeakKeyDictionary

from django.conf import settings
from django.db.backends.postgresql import base
from psycopg import Connection
from psycopg_pool import ConnectionPool

# When each pooled connection was last lent (its check passed); a closed one drops out.
_lent: WeakKeyDictionary[Connection, float] = WeakKeyDictionary()


def pool_check(conn: Connection) -> None:
    """Raise when `conn` may not be fit to lend; the pool then discards it and takes another."""
    now = time.monotonic()
    last = _lent.get(conn)
    if (
        last is None
        or now - last >= settings.DATABASE_POOL_CHECK_IDLE_SECONDS
        or conn.closed
        or has_input(conn)
    ):
        ConnectionPool.check_connection(conn)
    _lent[conn] = now


def has_input(conn: Connection) -> bool:
    """Whether the server sent anything to a connection that is not running a statement."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        # Django passes psycopg_pool's round-trip check (CONN_HEALTH_CHECKS) or none, and
        # refuses a `check` among the pool's options: the pool keeps its check in `_check`.
        if pool is not None and pool._check is not pool_check:  # noqa: SLF001
            pool._check = pool_check  # noqa: SLF001
        return pool
