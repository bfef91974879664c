"""A throw-away database on the same PostgreSQL server for the knowledge benchmarks.

Call `bench_database(name)` before django.setup(): it creates the database (dropping an old
one of that name), points Django at it and returns a function that drops it afterwards. The
app's own database is never touched.
"""

from __future__ import annotations

import os
import sys
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
