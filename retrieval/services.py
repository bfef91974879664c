"""Write side of the knowledge base: accept a file, parse, chunk, embed and index it, or fail it.

A document's chunks are only ever written in one transaction together with status READY, and
search serves READY documents only: an ingestion that fails or is interrupted never serves
half a document.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from retrieval.chunking import ChunkDraft, chunk_text
from retrieval.embedders import get_embedder
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.parsing import DocumentRejected, document_parse, upload_check
from retrieval.signals import document_changed_send

logger = logging.getLogger(__name__)
Status = KnowledgeDocument.Status
IN_PROGRESS = (Status.QUEUED, Status.PARSING, Status.EMBEDDING)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def title_from_markdown(text: str, fallback: str) -> str:
    """The first '# ' heading, else the fallback."""
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def embedding_input(*, title: str, heading: str, text: str) -> str:
    """What the embedder sees for a passage: title and section give it context."""
    prefix = f"{title} > {heading}" if heading else title
    return f"{prefix}\n{text}"


def _title_from_name(name: str) -> str:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[_-]+", " ", stem).strip().capitalize() or name


def document_accept(*, source_name: str, data: bytes, title: str = "") -> KnowledgeDocument:
    """Validate a file and store it as a new document or a new version of one (not yet indexed).

    Raises DocumentRejected (nothing is stored) for an empty, oversized, unsupported or
    mislabelled file. An unchanged file of a READY document is a no-op.
    """
    kind = upload_check(name=source_name, data=data)
    digest = _sha256(data)
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
            # The old passages are withdrawn now: they must not be cited next to the new file.
            document.version += 1
            document.chunks.all().delete()
            document_changed_send(document_id=document.id, version=document.version, deleted=False)
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


def document_enqueue(*, document: KnowledgeDocument) -> None:
    """Queue the ingestion task for the document's current version, once the caller commits."""
    from retrieval.tasks import document_ingest_task, ingestion_reaper_ensure

    document_id, version = document.id, document.version

    def enqueue() -> None:
        result = document_ingest_task.enqueue(document_id=document_id, version=version)
        KnowledgeDocument.objects.filter(id=document_id, version=version).update(
            task_id=str(result.id)
        )
        document.task_id = str(result.id)
        ingestion_reaper_ensure()

    transaction.on_commit(enqueue)


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


def _touch(document_id: int, version: int, **fields: object) -> bool:
    """Update a document's ingestion state unless it was replaced or deleted meanwhile."""
    now = timezone.now()
    fields = {"heartbeat_at": now, "updated_at": now, **fields}
    updated = KnowledgeDocument.objects.filter(id=document_id, version=version).update(**fields)
    return updated == 1


def document_process(*, document_id: int, version: int) -> str:
    """Parse, chunk, embed and index one version of a document; returns the outcome.

    Outcomes: "ready", "failed" (the reason is stored on the document), "superseded" (the
    document was replaced or deleted meanwhile; nothing written), "skipped" (already done).
    Unexpected errors re-queue the document (up to INGEST_MAX_ATTEMPTS) and propagate.
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
        )
        if not drafts:
            raise DocumentRejected(f"{document.source_name}: no text could be extracted")
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


def _index(
    document_id: int,
    version: int,
    title: str,
    text: str,
    drafts: list[ChunkDraft],
    vectors: list,
) -> str:
    # Chunks and READY are written together: a reader sees no passages or all of them.
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update()
            .filter(id=document_id, version=version)
            .first()
        )
        if document is None or document.status in (Status.READY, Status.FAILED):
            return "superseded"
        document.chunks.all().delete()
        Chunk.objects.bulk_create(
            Chunk(
                document=document,
                ordinal=i,
                heading=d.heading[:300],
                text=d.text,
                token_count=d.token_count,
                content_hash=_sha256(d.text.encode()),
                embedding=vectors[i].tolist(),
            )
            for i, d in enumerate(drafts)
        )
        document.title = title[:300]
        document.content = text
        document.status = Status.READY
        document.error = ""
        document.chunks_total = document.chunks_done = len(drafts)
        document.heartbeat_at = None
        document.save()
        document_changed_send(document_id=document.id, version=document.version, deleted=False)
    return "ready"


def document_retry_or_fail(*, document_id: int, version: int, reason: str) -> str:
    """Re-queue an interrupted ingestion, or fail it after INGEST_MAX_ATTEMPTS; returns the status."""
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update()
            .filter(id=document_id, version=version)
            .first()
        )
        if document is None or document.status in (Status.READY, Status.FAILED):
            return "superseded"
        document.chunks.all().delete()
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
        document_enqueue(document=document)
        return Status.QUEUED


def document_reingest(*, document: KnowledgeDocument) -> KnowledgeDocument:
    """Index a document's stored file again from scratch (e.g. after a failure or new settings)."""
    with transaction.atomic():
        document = KnowledgeDocument.objects.select_for_update().get(id=document.id)
        document.version += 1
        document.chunks.all().delete()
        document.status = Status.QUEUED
        document.error = ""
        document.attempts = 0
        document.chunks_total = document.chunks_done = 0
        document.task_id = ""
        document.heartbeat_at = None
        document.save()
        document_changed_send(document_id=document.id, version=document.version, deleted=False)
        document_enqueue(document=document)
    return document


def documents_reap_stale(*, now=None) -> dict[str, int]:  # noqa: ANN001 - datetime | None
    """Find ingestions whose worker vanished (django-tasks #46) and retry or fail them.

    A document is stale when it is PARSING/EMBEDDING with no heartbeat for INGEST_STALE_SECONDS,
    or QUEUED for that long while its task is neither waiting nor running. The task rows left
    RUNNING by a killed worker are marked FAILED so they stop looking alive.
    """
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    from retrieval.tasks import document_ingest_task

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.INGEST_STALE_SECONDS)
    counts = {"requeued": 0, "failed": 0, "tasks_failed": 0}
    task_path = document_ingest_task.module_path
    running = DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING, task_path=task_path, started_at__lt=cutoff
    )
    busy_ids = set(
        KnowledgeDocument.objects.filter(
            status__in=(Status.PARSING, Status.EMBEDDING), heartbeat_at__gte=cutoff
        ).values_list("task_id", flat=True)
    )
    for result in running:
        if str(result.id) in busy_ids:
            continue
        result.set_failed(StaleIngestion("the worker running this task stopped (reaped)"))
        counts["tasks_failed"] += 1
    stale = list(
        KnowledgeDocument.objects.filter(
            status__in=(Status.PARSING, Status.EMBEDDING), heartbeat_at__lt=cutoff
        ).only("id", "version")
    )
    alive = set(
        str(i)
        for i in DBTaskResult.objects.filter(
            task_path=task_path,
            status__in=(TaskResultStatus.READY, TaskResultStatus.RUNNING),
        ).values_list("id", flat=True)
    )
    for document in KnowledgeDocument.objects.filter(
        status=Status.QUEUED, updated_at__lt=cutoff
    ).only("id", "version", "task_id"):
        if document.task_id not in alive:
            stale.append(document)
    for document in stale:
        outcome = document_retry_or_fail(
            document_id=document.id,
            version=document.version,
            reason="ingestion was interrupted (the worker stopped or the task was lost)",
        )
        if outcome == Status.QUEUED:
            counts["requeued"] += 1
        elif outcome == Status.FAILED:
            counts["failed"] += 1
    return counts


class StaleIngestion(Exception):
    """Recorded on a task row whose worker vanished."""
