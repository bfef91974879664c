"""The pool's check before lending a connection: no round trip for one lent moments ago, the
full check for one idle for long or with anything to read (a server that ended it), on a real
PostgreSQL."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from chatbot.postgresql import base as db_pool

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def trips(monkeypatch):  # noqa: ANN001, ANN201
    """The full checks (round trips) pool_check makes."""
    made = []
    full = ConnectionPool.check_connection

    def counted(conn: psycopg.Connection) -> None:
        made.append(conn.info.backend_pid)
        full(conn)

    monkeypatch.setattr(db_pool.ConnectionPool, "check_connection", staticmethod(counted))
    return made


@pytest.fixture
def raw():  # noqa: ANN201
    """A connection to the test database outside Django, as the pool holds them."""
    params = connection.get_connection_params()
    conn = psycopg.connect(**params, autocommit=True)
    yield conn
    conn.close()


def test_a_connection_lent_moments_ago_is_lent_again_without_a_round_trip(
    raw,  # noqa: ANN001
    trips,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.DATABASE_POOL_CHECK_IDLE_SECONDS = 60
    for _ in range(3):
        db_pool.pool_check(raw)
        raw.execute("SELECT 1")
    assert trips == [raw.info.backend_pid]  # only the first lending checked by a trip
    settings.DATABASE_POOL_CHECK_IDLE_SECONDS = 0
    db_pool.pool_check(raw)
    db_pool.pool_check(raw)
    assert len(trips) == 3  # idle "too long": every lending pays the trip again


def test_a_connection_the_server_ended_fails_the_check_at_once(
    raw,  # noqa: ANN001
    trips,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.DATABASE_POOL_CHECK_IDLE_SECONDS = 60
    db_pool.pool_check(raw)
    pid = raw.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    deadline = time.monotonic() + 10
    while not db_pool.has_input(raw) and time.monotonic() < deadline:
        time.sleep(0.01)
    # Lent a moment ago, yet not lent again: what the server sent forces the full check.
    with pytest.raises(psycopg.OperationalError):
        db_pool.pool_check(raw)
    assert trips == [pid, pid]


def test_the_pool_replaces_a_terminated_connection_and_the_next_query_works(
    settings,  # noqa: ANN001
) -> None:
    settings.DATABASE_POOL_CHECK_IDLE_SECONDS = 60
    pool = connection.pool
    assert pool is not None and pool._check is db_pool.pool_check  # noqa: SLF001
    pool.open(wait=True)
    lent = [pool.getconn() for _ in range(2)]
    pids = {c.info.backend_pid for c in lent}
    for conn in lent:
        pool.putconn(conn)
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(pids)]
        )
    time.sleep(0.2)
    again = [pool.getconn() for _ in range(2)]
    try:
        for conn in again:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid not in pids
    finally:
        for conn in again:
            pool.putconn(conn)
