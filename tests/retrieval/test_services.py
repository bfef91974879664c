"""Ingestion write side: versions, the document_changed signal, no half-indexed documents."""

from __future__ import annotations

import pytest

from retrieval.embedders import get_embedder
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.parsing import DocumentRejected
from retrieval.services import (
    document_accept,
    document_ingest_text,
    document_process,
)
from retrieval.signals import document_changed
from tests.retrieval import embedders as test_embedders

pytestmark = pytest.mark.django_db
Status = KnowledgeDocument.Status

RETURNS = "# Returns\n\n## Window\n\nYou can return items within 30 days.\n\n## Refunds\n\nRefunds take 5 days."


@pytest.fixture
def changes():  # noqa: ANN201
    """Every document_changed event sent during the test, as (document_id, version, deleted)."""
    seen: list[tuple[int, int, bool]] = []

    def receiver(sender, document_id, version, deleted, **kwargs):  # noqa: ANN001, ANN003, ANN202
        assert sender is KnowledgeDocument
        seen.append((document_id, version, deleted))

    document_changed.connect(receiver, weak=False)
    yield seen
    document_changed.disconnect(receiver)


def test_ingest_text_chunks_with_title_and_heading(
    django_capture_on_commit_callbacks, changes
) -> None:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):
        document = document_ingest_text(
            source_name="demo/returns.md", title="Returns", text=RETURNS
        )
    assert document.status == Status.READY and document.version == 1
    chunks = list(document.chunks.order_by("ordinal"))
    assert [c.heading for c in chunks] == ["Window", "Refunds"]
    assert document.chunks_done == document.chunks_total == 2
    assert changes == [(document.id, 1, False)]


def test_unchanged_text_is_a_no_op(django_capture_on_commit_callbacks, changes) -> None:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):
        first = document_ingest_text(source_name="r.md", title="Returns", text=RETURNS)
        ids = set(first.chunks.values_list("id", flat=True))
        again = document_ingest_text(source_name="r.md", title="Returns", text=RETURNS)
    assert again.version == 1 and set(again.chunks.values_list("id", flat=True)) == ids
    assert len(changes) == 1


def test_replace_bumps_version_drops_old_chunks_and_signals(
    django_capture_on_commit_callbacks,
    changes,  # noqa: ANN001
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first = document_ingest_text(source_name="r.md", title="Returns", text=RETURNS)
        old_ids = set(first.chunks.values_list("id", flat=True))
        second = document_ingest_text(
            source_name="r.md", title="Returns", text="# Returns\n\nReturns are free for 60 days."
        )
    assert second.id == first.id and second.version == 2
    assert not Chunk.objects.filter(id__in=old_ids).exists()
    assert [c.text for c in second.chunks.all()] == ["Returns are free for 60 days."]
    # v1 served, then v2 served (accepting v2 changed nothing served: no event)
    assert changes == [(first.id, 1, False), (first.id, 2, False)]


def test_delete_removes_chunks_and_signals(django_capture_on_commit_callbacks, changes) -> None:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):
        document = document_ingest_text(source_name="r.md", title="Returns", text=RETURNS)
    changes.clear()
    with django_capture_on_commit_callbacks(execute=True):
        KnowledgeDocument.objects.filter(id=document.id).delete()  # as the admin's bulk delete does
    assert not Chunk.objects.filter(document_id=document.id).exists()
    assert changes == [(document.id, 1, True)]


def test_duplicate_passages_are_indexed_once() -> None:
    text = "# FAQ\n\n## A\n\nSame answer here.\n\n## B\n\nSame answer here."
    document = document_ingest_text(source_name="faq.md", title="FAQ", text=text)
    assert document.chunks.count() == 1


def test_a_superseded_version_writes_nothing() -> None:
    first = document_accept(source_name="r.md", data=RETURNS.encode(), title="Returns")
    document_accept(source_name="r.md", data=b"# Returns\n\nNew policy.", title="Returns")
    assert document_process(document_id=first.id, version=1) == "superseded"
    assert Chunk.objects.count() == 0


def test_failure_half_way_leaves_no_chunks_and_retries_then_fails(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER = "tests.retrieval.embedders.BreaksOnSecondBatchEmbedder"
    settings.EMBEDDING_BATCH_SIZE = 1
    settings.INGEST_MAX_ATTEMPTS = 2
    get_embedder.cache_clear()
    test_embedders.BreaksOnSecondBatchEmbedder.calls = 0
    try:
        document = document_accept(source_name="r.md", data=RETURNS.encode(), title="Returns")
        with pytest.raises(RuntimeError):
            document_process(document_id=document.id, version=document.version)
        document.refresh_from_db()
        # One batch was embedded before the crash, yet nothing is indexed or served.
        assert document.status == Status.QUEUED and document.chunks.count() == 0
        assert "retrying after: internal error" in document.error
        with pytest.raises(RuntimeError):
            document_process(document_id=document.id, version=document.version)
        document.refresh_from_db()
        assert document.status == Status.FAILED and document.chunks.count() == 0
        assert "gave up after 2 attempts" in document.error
    finally:
        get_embedder.cache_clear()


def test_text_that_cannot_be_indexed_raises_and_is_marked_failed() -> None:
    with pytest.raises(DocumentRejected):
        document_ingest_text(source_name="x.md", title="X", text="# Only a title")
    document = KnowledgeDocument.objects.get(source_name="x.md")
    assert document.status == Status.FAILED and "no text" in document.error
