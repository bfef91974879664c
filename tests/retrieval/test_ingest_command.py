"""`manage.py ingest PATH...`: folders and files, inline or through the worker."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from retrieval.models import KnowledgeDocument
from tests.retrieval import files

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder tree with supported, unsupported and bad files."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "returns.md").write_text("# Returns\n\nWithin 30 days.")
    (tmp_path / "sub" / "care.pdf").write_bytes(files.pdf_with_text(["Wash at 40."], title="Care"))
    (tmp_path / "sub" / "page.html").write_text("<h1>Hours</h1><p>Open 9 to 5.</p>")
    (tmp_path / "sub" / "empty.txt").write_text("")
    (tmp_path / "notes.xyz").write_text("ignored: not a supported type")
    return tmp_path


def test_inline_ingest_of_a_folder(folder: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest", str(folder), "--inline", "--prefix", "kb/", stdout=out, stderr=err)
    states = dict(KnowledgeDocument.objects.values_list("source_name", "status"))
    assert states == {"kb/returns.md": "ready", "kb/care.pdf": "ready", "kb/page.html": "ready"}
    assert "rejected: kb/empty.txt: the file is empty" in err.getvalue()
    assert "ready: 3 documents" in out.getvalue() and "rejected: 1" in out.getvalue()


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        call_command("ingest", str(tmp_path / "nope"))


def test_no_wait_only_queues(folder: Path) -> None:
    call_command("ingest", str(folder / "returns.md"), "--no-wait", stdout=io.StringIO())
    document = KnowledgeDocument.objects.get()
    assert document.status == "queued"
