"""Foundation promises: pinned model files, offline tokenizer, database settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.embedded_db import database_from_url
from routing.bundled import BUNDLED_MODELS, ModelFileError, model_path
from routing.tokens import count_tokens


def test_bundled_model_is_verified_against_its_pin(tmp_path: Path) -> None:
    path = model_path("smollm2-135m", tmp_path)
    assert path.stat().st_size == BUNDLED_MODELS["smollm2-135m"].size
    assert (tmp_path / "smollm2-135m.gguf.verified").exists()


def test_tampered_model_file_is_a_clear_error_not_a_download(tmp_path: Path) -> None:
    model_path("smollm2-135m", tmp_path)
    target = tmp_path / "smollm2-135m.gguf"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the pinned sha256"):
        model_path("smollm2-135m", tmp_path)


def test_unknown_model_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="qwen2.5-coder-0.5b"):
        model_path("gpt-5", tmp_path)


def test_tiktoken_counts_offline() -> None:
    assert count_tokens("hello world") == 2


def test_database_url_is_parsed() -> None:
    db = database_from_url("postgresql://bot:s%40cret@db.example.com:6543/chat")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "bot",
        "s@cret",
        "db.example.com",
        "6543",
        "chat",
    )
    socket = database_from_url("postgresql://postgres:@/postgres?host=/srv/pg")
    assert socket["HOST"] == "/srv/pg"
    with pytest.raises(ValueError):
        database_from_url("mysql://x@y/z")


@pytest.mark.django_db
def test_vector_extension_is_installed() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() is not None


@pytest.mark.django_db
def test_every_model_change_has_its_migration() -> None:
    # Migrations are written by hand when several changes land at once: none may be missing.
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
