"""Curated answers: an admin's answer, served through the answer cache and its guard, versioned.

A curated answer is stored as cache entries (one per phrasing of the question) marked with their
`CuratedAnswer` and version, so a customer's question reaches it through the very lookup and guard
a cached model answer goes through (`retrieval.cache.cache_lookup`). Unlike a model's entry it does
not expire with CACHE_TTL_SECONDS, cites no document version (an edited document does not retire
an admin's words) and is never retired by a thumbs-down alone. Editing adds a version and retires
the previous one's entries as "superseded", so every earlier wording stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max, Sum

from retrieval.embedders import get_embedder
from retrieval.models import CacheEntry, Chunk, CuratedAnswer, KnowledgeDocument

TIER = "curated"
MAX_PHRASINGS = 20
MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 8000


class CuratedError(ValueError):
    """A curated answer that cannot be stored, with a message for the admin."""


@dataclass(frozen=True)
class CuratedVersion:
    """One version as the history shows it."""

    version: int
    answer: str
    phrasings: list[str]
    sources: list[dict[str, Any]]
    author: str
    created_at: Any
    active: bool
    hits: int


def curated_phrasings(*, question: str, phrasings: list[str] | str = "") -> list[str]:
    """The main question first, then the other phrasings, stripped, without repeats."""
    if isinstance(phrasings, str):
        phrasings = phrasings.splitlines()
    seen: dict[str, None] = {}
    for text in [question, *phrasings]:
        text = " ".join(str(text).split())
        if text and text.lower() not in {s.lower() for s in seen}:
            seen[text] = None
    return list(seen)


def curated_sources(*, document_ids: list[int]) -> list[dict[str, Any]]:
    """Citations for chosen documents, shaped like an answer's sources (first passage as the link)."""
    documents = KnowledgeDocument.objects.filter(
        id__in=document_ids, status=KnowledgeDocument.Status.READY
    ).order_by("title")
    first_chunks = dict(
        Chunk.objects.filter(document__in=documents, ordinal=0).values_list("document_id", "id")
    )
    sources = []
    for n, document in enumerate(documents, start=1):
        chunk_id = first_chunks.get(document.id)
        sources.append(
            {
                "n": n,
                "chunk_id": chunk_id,
                "document_id": document.id,
                "title": document.title,
                "heading": "",
                "url": f"/passages/{chunk_id}/" if chunk_id else "",
            }
        )
    return sources


def curated_save(
    *,
    question: str,
    answer: str,
    phrasings: list[str] | str = "",
    document_ids: list[int] | None = None,
    author: Any = None,
    curated: CuratedAnswer | None = None,
) -> CuratedAnswer:
    """Store a new curated answer, or a new version of `curated`; raises CuratedError on bad input.

    Embeds every phrasing (CPU: call from a worker thread, never the event loop).
    """
    question, answer = question.strip(), answer.strip()
    if not question:
        raise CuratedError("Write the question the answer is for.")
    if not answer:
        raise CuratedError("Write the answer.")
    if len(question) > MAX_QUESTION_CHARS:
        raise CuratedError(f"The question is longer than {MAX_QUESTION_CHARS} characters.")
    if len(answer) > MAX_ANSWER_CHARS:
        raise CuratedError(f"The answer is longer than {MAX_ANSWER_CHARS} characters.")
    texts = curated_phrasings(question=question, phrasings=phrasings)
    if len(texts) > MAX_PHRASINGS:
        raise CuratedError(f"At most {MAX_PHRASINGS} phrasings, {len(texts)} given.")
    sources = curated_sources(document_ids=list(document_ids or []))
    vectors = get_embedder().embed(texts)
    user = author if getattr(author, "pk", None) else None
    with transaction.atomic():
        if curated is None:
            curated = CuratedAnswer.objects.create(question=texts[0], created_by=user)
        else:
            # Serialise concurrent edits of one answer: versions stay unique and in order.
            curated = CuratedAnswer.objects.select_for_update().get(pk=curated.pk)
            curated.question = texts[0]
            curated.save(update_fields=["question", "updated_at"])
        entries = CacheEntry.objects.filter(curated=curated)
        version = (entries.aggregate(v=Max("version"))["v"] or 0) + 1
        entries.filter(active=True).update(active=False, retired_reason="superseded")
        CacheEntry.objects.bulk_create(
            CacheEntry(
                question=text,
                embedding=vector.tolist(),
                answer=answer,
                sources=sources,
                document_versions={},
                tier=TIER,
                curated=curated,
                version=version,
                author=user,
            )
            for text, vector in zip(texts, vectors, strict=True)
        )
    return curated


def curated_withdraw(*, curated: CuratedAnswer) -> int:
    """Take a curated answer out of service (its history stays); entries retired."""
    return CacheEntry.objects.filter(curated=curated, active=True).update(
        active=False, retired_reason="withdrawn"
    )


def curated_history(*, curated: CuratedAnswer) -> list[CuratedVersion]:
    """Every version, newest first, with its phrasings, author and hits."""
    by_version: dict[int, list[CacheEntry]] = {}
    for entry in (
        CacheEntry.objects.filter(curated=curated)
        .select_related("author")
        .defer("embedding")
        .order_by("-version", "id")
    ):
        by_version.setdefault(entry.version, []).append(entry)
    hits = dict(
        CacheEntry.objects.filter(curated=curated)
        .values("version")
        .annotate(n=Sum("hit_count"))
        .values_list("version", "n")
    )
    return [
        CuratedVersion(
            version=version,
            answer=entries[0].answer,
            phrasings=[e.question for e in entries],
            sources=list(entries[0].sources or []),
            author=entries[0].author.get_username() if entries[0].author else "",
            created_at=entries[0].created_at,
            active=any(e.active for e in entries),
            hits=int(hits.get(version) or 0),
        )
        for version, entries in by_version.items()
    ]
