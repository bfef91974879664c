"""The demo help centre loads through the same ingestion path, idempotently."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from retrieval.models import KnowledgeDocument

pytestmark = pytest.mark.django_db


def test_load_demo_knowledge_indexes_every_file_once() -> None:
    files = sorted(Path(settings.DEMO_KNOWLEDGE_DIR).glob("*.md"))
    if not files:
        pytest.skip(f"no demo documents in {settings.DEMO_KNOWLEDGE_DIR}")
    call_command("load_demo_knowledge", stdout=io.StringIO())
    documents = KnowledgeDocument.objects.all()
    assert documents.count() == len(files)
    assert all(d.status == "ready" and d.chunks.count() > 0 for d in documents)
    versions = dict(documents.values_list("source_name", "version"))
    call_command("load_demo_knowledge", stdout=io.StringIO())
    assert dict(KnowledgeDocument.objects.values_list("source_name", "version")) == versions
