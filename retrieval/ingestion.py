"""One version of a document through parse, chunk, embed and index, and its retry or failure.

Every chunk carries the document version it is of, and search serves only the chunks of a
document's `served_version`. A new version's chunks are written, served and the old version's
chunks deleted in one transaction together with status READY: an ingestion that fails or is
interrupted never serves half a document, and until a replacement is READY the old version
stays searchable (a broken file erases nothing).

This module knows nothing of the task queue: whoever runs an ingestion passes `enqueue`, the
function that queues a document's current version again (retrieval.tasks.document_enqueue), so
retrieval.tasks can import this module and nothing here imports it back.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from retrieval.chunking import ChunkDraft, chunk_text
from retrieval.embedders import embedding_input, get_embedder
from retrieval.language import detect_language, text_search_config
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.parsing import DocumentRejected, document_parse
from retrieval.signals import document_changed_send

Status = KnowledgeDocument.Status
IN_PROGRESS = (Status.QUEUED, Status.PARSING, Status.EMBEDDING)


class Enqueue(Protocol):
    """Queues the ingestion of a document's current version once the caller commits."""

    def __call__(self, *, document: KnowledgeDocument) -> None: ...


def content_hash(data: bytes) -> str:
    """The sha256 hex digest stored on documents and chunks."""
    return hashlib.sha256(data).hexdigest()


def title_from_markdown(text: str, fallback: str) -> str:
    """The first '# ' heading, else the fallback."""
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def _title_from_name(name: str) -> str:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[_-]+", " ", stem).strip().capitalize() or name


def _touch(document_id: int, version: int, **fields: object) -> bool:
    """Update a document's ingestion state unless it was replaced or deleted meanwhile."""
    now = timezone.now()
    fields = {"heartbeat_at": now, "updated_at": now, **fields}
    updated = KnowledgeDocument.objects.filter(id=document_id, version=version).update(**fields)
    return updated == 1


def document_process(*, document_id: int, version: int, enqueue: Enqueue) -> str:
    """Parse, chunk, embed and index one version of a document; returns the outcome.

    Outcomes: "ready", "failed" (the reason is stored on the document), "superseded" (the
    document was replaced or deleted meanwhile; nothing written), "skipped" (already done).
    Unexpected errors re-queue the document (up to INGEST_MAX_ATTEMPTS, with enqueue) and
    propagate.
    """
    document = KnowledgeDocument.objects.filter(id=document_id, version=version).first()
    if document is None:
        return "superseded"
    if document.status in (Status.READY, Status.FAILED):
        return "skipped"
    if not _touch(document_id, version, status=Status.PARSING, attempts=F("attempts") + 1):
        return "superseded"
    try:
        parsed = document_parse(
            name=document.source_name, kind=document.source_type, data=bytes(document.raw)
        )
        title = (
            document.title
            or parsed.title
            or title_from_markdown(parsed.text, _title_from_name(document.source_name))
        )
        drafts = chunk_text(
            parsed.text,
            max_tokens=settings.CHUNK_TOKENS,
            overlap_tokens=settings.CHUNK_OVERLAP_TOKENS,
            count_tokens=get_embedder().count_tokens,
            paged=parsed.paged,
        )
        if not drafts:
            raise DocumentRejected(f"{document.source_name}: no text could be extracted")
        if len(drafts) > settings.INGEST_MAX_CHUNKS:
            # Checked before embedding, the step that would hold the queue for long.
            raise DocumentRejected(
                f"{document.source_name}: the document makes {len(drafts):,} passages, over the "
                f"{settings.INGEST_MAX_CHUNKS:,} limit (INGEST_MAX_CHUNKS); split the document"
            )
        if not _touch(
            document_id, version, status=Status.EMBEDDING, chunks_total=len(drafts), chunks_done=0
        ):
            return "superseded"
        vectors = _embed(document_id, version, title, drafts)
        if vectors is None:
            return "superseded"
        return _index(document_id, version, title, parsed.text, drafts, vectors)
    except DocumentRejected as exc:
        reason = str(exc)
        prefix = f"{document.source_name}: "
        reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
        _touch(document_id, version, status=Status.FAILED, error=reason, heartbeat_at=None)
        return "failed"
    except Exception as exc:
        document_retry_or_fail(
            document_id=document_id,
            version=version,
            reason=f"internal error during ingestion ({type(exc).__name__}: {exc})",
            enqueue=enqueue,
        )
        raise


def _embed(document_id: int, version: int, title: str, drafts: list[ChunkDraft]) -> list | None:
    embedder = get_embedder()
    batch = settings.EMBEDDING_BATCH_SIZE
    vectors: list = []
    for start in range(0, len(drafts), batch):
        part = drafts[start : start + batch]
        vectors.extend(
            embedder.embed(
                [embedding_input(title=title, heading=d.heading, text=d.text) for d in part]
            )
        )
        # Progress doubles as the heartbeat the reaper watches.
        if not _touch(document_id, version, chunks_done=len(vectors)):
            return None
    return vectors


def _unfinished_for_update(*, document_id: int, version: int) -> KnowledgeDocument | None:
    """This version of the document, locked, unless it was replaced or already finished."""
    document = (
        KnowledgeDocument.objects.select_for_update()
        .filter(id=document_id, version=version)
        .first()
    )
    if document is None or document.status in (Status.READY, Status.FAILED):
        return None
    return document


def _index(
    document_id: int,
    version: int,
    title: str,
    text: str,
    drafts: list[ChunkDraft],
    vectors: list,
) -> str:
    language = detect_language(text)
    text_config = text_search_config(language or settings.LANGUAGE_DEFAULT)
    # The new chunks, the switch to them and READY are one transaction: a reader sees the old
    # version whole or the new one whole, never a mix or a gap.
    with transaction.atomic():
        document = _unfinished_for_update(document_id=document_id, version=version)
        if document is None:
            return "superseded"
        Chunk.objects.bulk_create(
            Chunk(
                document=document,
                version=version,
                ordinal=i,
                heading=d.heading[:300],
                page=d.page,
                text=d.text,
                token_count=d.token_count,
                content_hash=content_hash(d.text.encode()),
                embedding=vectors[i].tolist(),
                text_config=text_config,
            )
            for i, d in enumerate(drafts)
        )
        document.chunks.exclude(version=version).delete()
        document.served_version = version
        document.title = title[:300]
        document.content = text
        document.language = language
        document.status = Status.READY
        document.error = ""
        document.chunks_total = document.chunks_done = len(drafts)
        document.heartbeat_at = None
        document.save()
        document_changed_send(document_id=document.id, version=document.version, deleted=False)
    return "ready"


def document_retry_or_fail(*, document_id: int, version: int, reason: str, enqueue: Enqueue) -> str:
    """Re-queue an interrupted ingestion (with enqueue), or fail it after INGEST_MAX_ATTEMPTS;
    returns the status."""
    with transaction.atomic():
        document = _unfinished_for_update(document_id=document_id, version=version)
        if document is None:
            return "superseded"
        # Only an unfinished version's leftovers go: the served version stays searchable.
        document.chunks.exclude(version=document.served_version).delete()
        document.heartbeat_at = None
        if document.attempts >= settings.INGEST_MAX_ATTEMPTS:
            document.status = Status.FAILED
            document.error = (
                f"{reason}; gave up after {document.attempts} attempts. "
                "Use the admin action 'Re-ingest' to try again."
            )
            document.save()
            return Status.FAILED
        document.status = Status.QUEUED
        document.error = f"retrying after: {reason}"
        document.task_id = ""
        document.save()
        enqueue(document=document)
        return Status.QUEUED
