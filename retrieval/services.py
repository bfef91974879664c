"""Write side of the knowledge base: accept a file, then index it on the task worker or in this
process, or index it again. The indexing itself is retrieval.ingestion; the queue is
retrieval.tasks.
"""

from __future__ import annotations

from django.db import transaction

from retrieval import ingestion
from retrieval.ingestion import IN_PROGRESS, Status, content_hash
from retrieval.ingestion import embedding_input as embedding_input  # re-exported (bench/)
from retrieval.models import KnowledgeDocument
from retrieval.parsing import DocumentRejected, upload_check
from retrieval.tasks import document_enqueue


def document_accept(*, source_name: str, data: bytes, title: str = "") -> KnowledgeDocument:
    """Validate a file and store it as a new document or a new version of one (not yet indexed).

    Raises DocumentRejected (nothing is stored) for an empty, oversized, unsupported or
    mislabelled file. An unchanged file of a READY document is a no-op.
    """
    kind = upload_check(name=source_name, data=data)
    digest = content_hash(data)
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update().filter(source_name=source_name).first()
        )
        if (
            document is not None
            and document.content_hash == digest
            and document.status
            in (
                *IN_PROGRESS,
                Status.READY,
            )
        ):
            return document
        if document is None:
            document = KnowledgeDocument(source_name=source_name, version=1)
        else:
            # The old passages stay searchable, and answers cached from them are served, until
            # the new version is READY (ingestion switches in one transaction and sends
            # document_changed then).
            document.version += 1
        # Blank means: take it from the file (PDF/HTML title, first '# ' heading, file name).
        document.title = title
        document.source_type = kind
        document.raw = data
        document.size_bytes = len(data)
        document.content_hash = digest
        document.status = Status.QUEUED
        document.error = ""
        document.chunks_total = document.chunks_done = 0
        document.attempts = 0
        document.task_id = ""
        document.heartbeat_at = None
        document.save()
    return document


def document_upload(*, source_name: str, data: bytes, title: str = "") -> KnowledgeDocument:
    """Accept a file and queue its ingestion on the task worker (see document_accept)."""
    document = document_accept(source_name=source_name, data=data, title=title)
    if document.status == Status.QUEUED and not document.task_id:
        document_enqueue(document=document)
    return document


def document_ingest_text(*, source_name: str, title: str, text: str) -> KnowledgeDocument:
    """Create or replace a markdown document and index it in this process (no worker needed).

    Unchanged text of a READY document is a no-op; raises DocumentRejected if it cannot be
    indexed (the document is then left FAILED with the reason).
    """
    name = source_name if source_name.lower().endswith((".md", ".txt")) else f"{source_name}.md"
    document = document_accept(source_name=name, data=text.encode(), title=title)
    document = KnowledgeDocument.objects.get(id=document.id)
    if document.status != Status.READY:
        document_process(document_id=document.id, version=document.version)
        document.refresh_from_db()
        if document.status == Status.FAILED:
            raise DocumentRejected(document.error)
    return document


def document_process(*, document_id: int, version: int) -> str:
    """Parse, chunk, embed and index one version of a document in this process; returns the
    outcome (see retrieval.ingestion.document_process). Unexpected errors re-queue the document
    on the task worker (up to INGEST_MAX_ATTEMPTS) and propagate."""
    return ingestion.document_process(
        document_id=document_id, version=version, enqueue=document_enqueue
    )


def document_reingest(*, document: KnowledgeDocument) -> KnowledgeDocument:
    """Index a document's stored file again from scratch (e.g. after a failure or new settings)."""
    with transaction.atomic():
        document = KnowledgeDocument.objects.select_for_update().get(id=document.id)
        document.version += 1
        document.status = Status.QUEUED
        document.error = ""
        document.attempts = 0
        document.chunks_total = document.chunks_done = 0
        document.task_id = ""
        document.heartbeat_at = None
        document.save()
        document_enqueue(document=document)
    return document
