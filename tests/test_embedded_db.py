"""The embedded PostgreSQL: DATABASE_SHARED_BUFFERS reaches a real server started on a fresh
data folder, and a value PostgreSQL would refuse is named before anything starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.embedded_db import DEFAULT_SHARED_BUFFERS, shared_buffers_setting

ROOT = Path(__file__).resolve().parents[1]

# A child process: the embedded server stops when its last holder exits.
_SHOW = """
import sys
import psycopg
from pathlib import Path
from chatbot.embedded_db import embedded_database_url
url = embedded_database_url(Path(sys.argv[1]), shared_buffers=sys.argv[2])
assert embedded_database_url(Path(sys.argv[1]), shared_buffers=sys.argv[2]) == url  # started once
with psycopg.connect(url) as conn:
    print(conn.execute("SHOW shared_buffers").fetchone()[0])
"""


def _started_with(pgdata: Path, shared_buffers: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _SHOW, str(pgdata), shared_buffers],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_shared_buffers_setting_reaches_a_fresh_embedded_server() -> None:
    # Under var/: the server runs as its own system user when started by root, and must reach
    # its folder (pytest's tmp_path is private to this user).
    pgdata = ROOT / "var" / f"test-pgdata-{os.getpid()}"
    try:
        assert _started_with(pgdata, "160MB") == "160MB"  # initialised and started with it
        assert _started_with(pgdata, "96MB") == "96MB"  # a changed value, next start
        assert _started_with(pgdata, "") == "128MB"  # PostgreSQL's own default again
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


def test_a_shared_buffers_value_postgres_would_refuse_is_named() -> None:
    assert shared_buffers_setting({}) == DEFAULT_SHARED_BUFFERS
    assert shared_buffers_setting({"DATABASE_SHARED_BUFFERS": " 4GB "}) == "4GB"
    assert shared_buffers_setting({"DATABASE_SHARED_BUFFERS": ""}) == ""
    for bad in ("lots", "4 GB", "4gb", "1GB'; x = '1"):
        with pytest.raises(ValueError, match="DATABASE_SHARED_BUFFERS=.*expected a size"):
            shared_buffers_setting({"DATABASE_SHARED_BUFFERS": bad})
