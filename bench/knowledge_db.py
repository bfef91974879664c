"""A throw-away database on the same PostgreSQL server for the knowledge benchmarks.

Call `bench_database(name)` before django.setup(): it creates the database (dropping an old
one of that name), points Django at it and returns a function that drops it afterwards. The
app's own database is never touched.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


def _server_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from chatbot.embedded_db import embedded_database_url, shared_buffers_setting

    var = Path(os.environ.get("CHATBOT_VAR_DIR", ROOT / "var")).resolve()
    return embedded_database_url(var / "pgdata", shared_buffers=shared_buffers_setting(os.environ))


def bench_database(name: str, *, reuse: bool = False) -> Callable[[], None]:
    """Create database `name`, make it Django's default, migrate it; returns a dropper.

    reuse: open the database a run kept (--keep) as it is, to measure it again (a 1M-chunk
    load and index build takes an hour on 2 cores).
    """
    import psycopg

    base = _server_url()
    parsed = urlparse(base)
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    if not reuse:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunparse(parsed._replace(path=f"/{name}"))
    os.environ.pop("DATABASE_NAME", None)

    import django

    django.setup()
    from django.core.management import call_command

    if not reuse:
        call_command("migrate", verbosity=0)

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return drop


def cache_entries_fill(count: int) -> float:
    """count active, shared cache entries, each citing two documents with ids from 1,000,000 on
    (none a benchmark creates), with random question vectors; the seconds it took."""
    from django.db import connection

    from retrieval.models import CacheEntry

    started = time.perf_counter()
    table = CacheEntry._meta.db_table
    index = next(i for i in CacheEntry._meta.indexes if i.name == "cache_embedding_hnsw")
    with connection.cursor() as cursor:
        # Built after the fill, as one build is far faster than count inserts.
        cursor.execute(f'DROP INDEX "{index.name}"')
        cursor.execute(
            f"INSERT INTO {table} (question, embedding, answer, sources, document_versions, tier, "
            "score, cost, active, retired_reason, hit_count, version, producers, shared_at, "
            "created_at) "
            "SELECT 'question ' || i, (SELECT array_agg(random() - 0.5) "
            "FROM generate_series(1, %s) WHERE i > 0)::vector, 'answer', '[]', "
            "jsonb_build_object((1000000 + i %% 5000)::text, 1, (1000000 + (i * 7) %% 5000)::text, 1), "
            "'medium', 0.9, 0, true, '', 0, 0, '[]', now(), now() "
            "FROM generate_series(1, %s) i",
            [CacheEntry._meta.get_field("embedding").dimensions, count],
        )
    with connection.schema_editor() as editor:
        editor.add_index(CacheEntry, index)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}")
        # The fill's writes flushed now, not by the checkpointer during what is measured next.
        cursor.execute("CHECKPOINT")
    return round(time.perf_counter() - started, 1)
