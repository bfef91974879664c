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

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, F, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from retrieval.chunking import ChunkDraft, chunk_text
from retrieval.db import ASYNC_COMMIT
from retrieval.embedders import embedding_input, get_embedder
from retrieval.language import detect_languages, text_search_config
from retrieval.models import Chunk, KnowledgeDocument, PassageMove
from retrieval.parsing import DocumentRejected, document_parse
from retrieval.signals import document_changed_send

logger = logging.getLogger(__name__)

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
    outcome = documents_process(documents=[(document_id, version)], enqueue=enqueue)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def documents_process(
    *, documents: Sequence[tuple[int, int]], enqueue: Enqueue
) -> list[str | Exception]:
    """Ingest several (document id, version) pairs, embedding their passages together; returns
    each one's outcome in order (see document_process), or the unexpected error it met (the
    document was re-queued or failed as document_process does; the others carry on).

    The embedder runs far faster on full batches than on a document's two or three passages,
    so documents are parsed and chunked one by one, and once INGEST_BATCH_CHUNKS passages are
    gathered they are embedded in full batches across documents, and the group is indexed in one
    transaction: a reader sees each document's old version or its new one, whole.
    """
    outcomes: dict[int, str | Exception] = {}
    group: list[tuple[int, _Prepared]] = []
    passages = 0  # in the group
    waiting = dict(enumerate(documents))
    last_beat = time.monotonic()
    for i, (document_id, version) in enumerate(documents):
        del waiting[i]
        prepared = _prepare(document_id, version, enqueue)
        if isinstance(prepared, _Prepared):
            group.append((i, prepared))
            passages += len(prepared.drafts)
            if passages >= settings.INGEST_BATCH_CHUNKS:
                outcomes.update(_embed_and_index(group, enqueue))
                group, passages = [], 0
        else:
            outcomes[i] = prepared
        if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
            # Documents claimed for this batch but not reached yet must not look abandoned.
            _beat([*waiting.values(), *((p.document_id, p.version) for _, p in group)])
            last_beat = time.monotonic()
    if group:
        outcomes.update(_embed_and_index(group, enqueue))
    return [outcomes[i] for i in range(len(documents))]


# Seconds between heartbeats of documents that wait in a batch (far below INGEST_STALE_SECONDS).
HEARTBEAT_SECONDS = 10.0
# Seconds between progress writes of the documents being embedded (each is also their
# heartbeat): written after every embedder call, they were one UPDATE per 8 passages.
PROGRESS_SECONDS = 1.0


@dataclass
class _Prepared:
    document_id: int
    version: int
    source_name: str
    title: str
    text: str
    drafts: list[ChunkDraft]
    vectors: list = field(default_factory=list)
    input_hashes: list[str] = field(default_factory=list)
    replaces: bool = False  # an earlier version is served: its passages' vectors may be reused
    superseded: bool = False


def _prepare(document_id: int, version: int, enqueue: Enqueue) -> _Prepared | str | Exception:
    """Parse and chunk one document (marked PARSING, its attempt counted); else its outcome."""
    # One statement takes the document and reads what parsing needs (an ORM read and a
    # separate update cost two trips and most of a small page's bookkeeping). It commits without
    # waiting for the disk (one flush per page was a fixed cost of every small page): the
    # attempt it counts is what stops a document that crashes the worker from being retried
    # forever, and a worker's crash never loses it; only PostgreSQL's own can, along with the
    # worker's work.
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {ASYNC_COMMIT} "
            f"UPDATE {connection.ops.quote_name(KnowledgeDocument._meta.db_table)} "
            "SET status = %(parsing)s, attempts = attempts + 1, heartbeat_at = %(now)s, "
            "updated_at = %(now)s FROM async_commit "
            "WHERE id = %(id)s AND version = %(version)s AND status NOT IN (%(ready)s, %(failed)s) "
            "RETURNING source_name, source_type, raw, title, served_version",
            {
                "alone": not connection.in_atomic_block,
                "parsing": Status.PARSING,
                "now": now,
                "id": document_id,
                "version": version,
                "ready": Status.READY,
                "failed": Status.FAILED,
            },
        )
        taken = cursor.fetchone()
    if taken is None:
        exists = KnowledgeDocument.objects.filter(id=document_id, version=version).exists()
        return "skipped" if exists else "superseded"
    source_name, source_type, raw, stored_title, served_version = taken

    def parse_and_chunk() -> _Prepared | str:
        parsed = document_parse(name=source_name, kind=source_type, data=bytes(raw))
        title = (
            stored_title
            or parsed.title
            or title_from_markdown(parsed.text, _title_from_name(source_name))
        )
        drafts = chunk_text(
            parsed.text,
            max_tokens=settings.CHUNK_TOKENS,
            overlap_tokens=settings.CHUNK_OVERLAP_TOKENS,
            count_tokens=get_embedder().count_tokens,
            paged=parsed.paged,
        )
        if not drafts:
            raise DocumentRejected(f"{source_name}: no text could be extracted")
        if len(drafts) > settings.INGEST_MAX_CHUNKS:
            # Checked before embedding, the step that would hold the queue for long.
            raise DocumentRejected(
                f"{source_name}: the document makes {len(drafts):,} passages, over the "
                f"{settings.INGEST_MAX_CHUNKS:,} limit (INGEST_MAX_CHUNKS); split the document"
            )
        prepared = _Prepared(document_id, version, source_name, title, parsed.text, drafts)
        prepared.replaces = served_version is not None
        return prepared

    return _guarded(document_id, version, source_name, enqueue, parse_and_chunk)


def _guarded(
    document_id: int,
    version: int,
    source_name: str,
    enqueue: Enqueue,
    step: Callable[[], _Prepared | str],
) -> _Prepared | str | Exception:
    """step(), with a rejected file stored as FAILED and an unexpected error re-queued."""
    try:
        return step()
    except DocumentRejected as exc:
        reason = str(exc)
        prefix = f"{source_name}: "
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
        return exc


def _embed_and_index(
    group: list[tuple[int, _Prepared]], enqueue: Enqueue
) -> dict[int, str | Exception]:
    """Embed the group's passages together, then index each document; their outcomes."""
    outcomes: dict[int, str | Exception] = {}
    try:
        _embedding_started([p for _, p in group])
        _embed([p for _, p in group])
    except Exception as exc:
        for i, p in group:
            outcomes[i] = _guarded(
                p.document_id, p.version, p.source_name, enqueue, functools.partial(_raise, exc)
            )
        return outcomes
    live = [(i, p) for i, p in group if not p.superseded]
    outcomes.update((i, "superseded") for i, p in group if p.superseded)
    try:
        outcomes.update(_index_together(live))
        return outcomes
    except Exception:
        # Nothing of the group was written (one transaction): each document is indexed on its
        # own, so only one that is at fault is retried or failed.
        logger.exception("indexing %s documents together failed; indexing one by one", len(live))
    for i, p in live:
        outcomes[i] = _guarded(
            p.document_id,
            p.version,
            p.source_name,
            enqueue,
            functools.partial(_index_alone, p),
        )
    return outcomes


def _index_alone(prepared: _Prepared) -> str:
    """One document indexed on its own (its outcome), as when its group failed."""
    return _index_together([(0, prepared)])[0]


def _raise(exc: Exception) -> str:
    raise exc


def _embedding_started(prepared: list[_Prepared]) -> None:
    """Mark the group's documents EMBEDDING with their passage counts, in one pipelined trip for
    the group rather than an update and a commit per page, and a document replaced or deleted
    meanwhile as superseded."""
    now = timezone.now()
    table = connection.ops.quote_name(KnowledgeDocument._meta.db_table)
    # One commit for the group, not one per page.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = %s, chunks_total = %s, chunks_done = 0, "
            "heartbeat_at = %s, updated_at = %s WHERE id = %s AND version = %s",
            [
                (Status.EMBEDDING, len(p.drafts), now, now, p.document_id, p.version)
                for p in prepared
            ],
        )
        updated = cursor.rowcount
    if updated < len(prepared):
        alive = set(_versions(prepared).values_list("id", "version"))
        for p in prepared:
            p.superseded = (p.document_id, p.version) not in alive


def _embed(prepared: list[_Prepared]) -> None:
    """Fill each document's vectors, EMBEDDING_BATCH_SIZE passages per embedder call, and mark
    a document replaced meanwhile as superseded.

    A passage that the embedder would be given exactly as one of the document's stored passages
    was (same title, heading and text) takes that passage's vector: an edit to one section of a
    long document embeds that section, not the whole document again.

    Passages are embedded longest first, so each call pads its batch to similar lengths (as
    SentenceTransformer.encode does within one call); in document order a short passage batched
    with a long one pays for the long one's padding (about 1.5x the time on help-centre pages).
    """
    # The active embedder read once for the group, not per call: an embedder switch does not
    # swap while a document is parsing or embedding, and these are.
    embedder = get_embedder().current()
    kept = _vectors_kept(prepared)
    texts: list[str] = []
    places: list[tuple[_Prepared, int]] = []
    filled: dict[int, int] = {}
    for p in prepared:
        p.vectors = [None] * len(p.drafts)
        p.input_hashes = []
        for i, d in enumerate(p.drafts):
            text = embedding_input(title=p.title, heading=d.heading, text=d.text)
            digest = content_hash(text.encode())
            p.input_hashes.append(digest)
            vector = kept.get((p.document_id, digest))
            if vector is None:
                texts.append(text)
                places.append((p, i))
            else:
                p.vectors[i] = vector
                filled[id(p)] = filled.get(id(p), 0) + 1
    order = sorted(range(len(texts)), key=lambda n: -len(texts[n]))
    step = settings.EMBEDDING_BATCH_SIZE
    touched: dict[int, _Prepared] = {}
    written = time.monotonic()
    for start in range(0, len(order), step):
        batch = order[start : start + step]
        vectors = embedder.embed([texts[n] for n in batch])
        for n, vector in zip(batch, vectors, strict=True):
            owner, i = places[n]
            owner.vectors[i] = vector
            filled[id(owner)] = filled.get(id(owner), 0) + 1
            touched[id(owner)] = owner
        if time.monotonic() - written < PROGRESS_SECONDS:
            continue
        live = [p for p in touched.values() if not p.superseded]
        touched, written = {}, time.monotonic()
        # Progress doubles as the heartbeat the reaper watches: one UPDATE for all embedded since,
        # its values as arrays (a CASE of a WHEN per document took the ORM milliseconds to build).
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {connection.ops.quote_name(KnowledgeDocument._meta.db_table)} AS d "
                "SET chunks_done = p.done, heartbeat_at = %s, updated_at = %s "
                "FROM unnest(%s::bigint[], %s::integer[], %s::integer[]) AS p(id, version, done) "
                "WHERE d.id = p.id AND d.version = p.version",
                [
                    now,
                    now,
                    [p.document_id for p in live],
                    [p.version for p in live],
                    [filled[id(p)] for p in live],
                ],
            )
            updated = cursor.rowcount
        if updated < len(live):
            alive = set(_versions(live).values_list("id", "version"))
            for p in live:
                p.superseded = (p.document_id, p.version) not in alive


def _vectors_kept(prepared: list[_Prepared]) -> dict[tuple[int, str], np.ndarray]:
    """The stored vectors of the replaced documents' passages, by (document id, input hash).

    Every stored vector is the active embedder's (a switch of embedder swaps them all at once),
    so a passage embedded from the same input would get the same vector."""
    replaced = [p.document_id for p in prepared if p.replaces]
    if not replaced:
        return {}
    rows = (
        Chunk.objects.filter(document_id__in=replaced)
        .exclude(input_hash="")
        .values_list("document_id", "input_hash", "embedding")
    )
    return {(d, digest): np.asarray(vector, dtype=np.float32) for d, digest, vector in rows}


def _versions(prepared: list[_Prepared]) -> QuerySet[KnowledgeDocument]:
    return document_versions((p.document_id, p.version) for p in prepared)


def document_versions(pairs: Iterable[tuple[int, int]]) -> QuerySet[KnowledgeDocument]:
    """The documents at these (id, version) pairs (one that moved on to a newer version is not
    among them)."""
    pairs = list(pairs)
    if not pairs:
        return KnowledgeDocument.objects.none()
    table = connection.ops.quote_name(KnowledgeDocument._meta.db_table)
    # The pairs as two arrays: an OR of a Q per pair took the ORM about 30 ms to build and run
    # for 256 documents (2-3 ms this way), and a batch asks several times.
    return KnowledgeDocument.objects.filter(
        RawSQL(
            f"({table}.id, {table}.version) IN (SELECT * FROM unnest(%s::bigint[], %s::integer[]))",
            ([d for d, _ in pairs], [v for _, v in pairs]),
            output_field=BooleanField(),
        )
    )


def _beat(documents: Sequence[tuple[int, int]]) -> None:
    """Refresh the heartbeat of documents that wait in a batch, so the reaper leaves them be."""
    if not documents:
        return
    document_versions(documents).filter(status__in=(Status.PARSING, Status.EMBEDDING)).update(
        heartbeat_at=timezone.now()
    )


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


def _index_together(items: list[tuple[int, _Prepared]]) -> dict[int, str]:
    """Index a group's documents in one transaction: each one's new passages written, its old
    version's deleted, and the switch to them with READY, so a reader sees every document's old
    version or its new one, whole, never a mix or a gap. A handful of statements for the group
    rather than six and a commit per document: on small pages those trips took about a fifth of
    the worker's time. Outcomes by position."""
    if not items:
        return {}
    languages = detect_languages([p.text for _, p in items])
    outcomes: dict[int, str] = {}
    with transaction.atomic():
        locked = {
            d.id: d
            for d in _versions([p for _, p in items])
            .select_for_update()
            .defer("raw", "content")
            .order_by("id")
        }
        chunks: list[Chunk] = []
        ready: list[KnowledgeDocument] = []
        replaced: set[int] = set()  # documents that served an earlier version until now
        now = timezone.now()
        for (i, p), language in zip(items, languages, strict=True):
            document = locked.get(p.document_id)
            if document is None or document.status in (Status.READY, Status.FAILED):
                outcomes[i] = "superseded"
                continue
            if document.served_version is not None:
                replaced.add(document.id)
            chunks += _chunk_rows(document, p, language)
            document.served_version = p.version
            document.title = p.title[:300]
            document.content = p.text
            document.language = language
            document.status = Status.READY
            document.error = ""
            document.chunks_total = document.chunks_done = len(p.drafts)
            document.heartbeat_at = None
            document.updated_at = now
            ready.append(document)
            outcomes[i] = "ready"
        Chunk.objects.bulk_create(chunks)
        carried = _passages_carried(replaced, chunks)
        _passages_moved(carried)
        gone = Chunk.objects.filter(document__in=ready).exclude(version=F("document__version"))
        if replaced:
            # The links still leading to a passage about to go are those whose text changed.
            PassageMove.objects.filter(new_id__in=gone.values("id")).delete()
        gone.delete()
        _documents_served(ready)
        for document in ready:
            document_changed_send(
                document_id=document.id,
                version=document.version,
                deleted=False,
                # None for a first version: no answer can cite a document never served.
                carried=carried.get(document.id, {}) if document.id in replaced else None,
            )
    return outcomes


def _passages_carried(replaced: set[int], chunks: list[Chunk]) -> dict[int, dict[int, int]]:
    """For each replaced document, its served passages that the new version has unchanged (the
    same heading and text): {document id: {old passage id: new passage id}}. What was cached
    from such passages still holds (the answer cache keeps it, pointed at the new ones). Called
    before the documents are saved as serving the new version."""
    if not replaced:
        return {}
    new: dict[tuple[int, str, str], int] = {}
    for chunk in chunks:
        new.setdefault((chunk.document_id, chunk.heading, chunk.content_hash), chunk.id)
    old = Chunk.objects.filter(
        document_id__in=replaced, version=F("document__served_version")
    ).values_list("id", "document_id", "heading", "content_hash")
    carried: dict[int, dict[int, int]] = {}
    for chunk_id, document_id, heading, digest in old:
        match = new.get((document_id, heading, digest))
        if match is not None:
            carried.setdefault(document_id, {})[chunk_id] = match
    return carried


def _passages_moved(carried: dict[int, dict[int, int]]) -> None:
    """Record where each kept passage is now, and move the links that led to its old id on to
    the new one (the links to a passage that changed are deleted with it, next)."""
    moves = [(old, new) for pairs in carried.values() for old, new in pairs.items()]
    if not moves:
        return
    table = connection.ops.quote_name(PassageMove._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET new_id = %s WHERE new_id = %s", [(n, o) for o, n in moves]
        )
    PassageMove.objects.bulk_create(
        [PassageMove(old_id=old, new_id=new) for old, new in moves], ignore_conflicts=True
    )


def _documents_served(documents: list[KnowledgeDocument]) -> None:
    """Save what _index_together set on each document: the updates go in one pipelined trip
    (psycopg's executemany). bulk_update's CASE per field and row cost more Python time than the
    round trips it saves (1.6 s for 261 pages)."""
    if not documents:
        return
    table = connection.ops.quote_name(KnowledgeDocument._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET served_version = %s, title = %s, content = %s, language = %s, "
            "status = %s, error = %s, chunks_total = %s, chunks_done = %s, heartbeat_at = NULL, "
            "updated_at = %s WHERE id = %s",
            [
                (
                    d.served_version,
                    d.title,
                    d.content,
                    d.language,
                    d.status,
                    d.error,
                    d.chunks_total,
                    d.chunks_done,
                    d.updated_at,
                    d.id,
                )
                for d in documents
            ],
        )


def _chunk_rows(document: KnowledgeDocument, prepared: _Prepared, language: str) -> list[Chunk]:
    """The passage rows of one version of a document, not yet saved."""
    text_config = text_search_config(language or settings.LANGUAGE_DEFAULT)
    return [
        Chunk(
            document=document,
            version=prepared.version,
            ordinal=i,
            heading=d.heading[:300],
            page=d.page,
            text=d.text,
            token_count=d.token_count,
            content_hash=content_hash(d.text.encode()),
            input_hash=prepared.input_hashes[i],
            embedding=prepared.vectors[i].tolist(),
            text_config=text_config,
        )
        for i, d in enumerate(prepared.drafts)
    ]


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
