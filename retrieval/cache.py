"""The semantic answer cache: guarded lookup, safe store, invalidation, thumbs-down, stats.

The pipeline calls `cache_lookup` with the standalone question before retrieval and
`cache_store` after an accepted, grounded answer, with plain data only. An entry is served
only when (1) its cosine similarity reaches CACHE_SIMILARITY_THRESHOLD, (2) the guard
(retrieval/guard.py) finds no negation, number, date, entity, opposite or question-kind
mismatch, (3) it is younger than CACHE_TTL_SECONDS and (4) every document it cited still has
the version it cited (checked at lookup, not only when document_changed arrives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone
from pgvector.django import CosineDistance

from retrieval.embedders import get_embedder
from retrieval.guard import guard_check
from retrieval.models import CacheEntry, CacheHit, KnowledgeDocument
from retrieval.signals import document_changed

# Questions about the present or about the customer's own things: never shared answers.
_PRESENT = re.compile(
    r"\b(today|tonight|now|right now|currently|current|latest|at the moment|this (?:week|month)|"
    r"yesterday|tomorrow|my (?:order|orders|parcel|package|delivery|refund|account|payment|"
    r"basket|cart|return|subscription))\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE_OR_ID = re.compile(r"(?:\+?\d[\d\s().-]{6,}\d)|\b[A-Z]{1,4}-?\d{4,}\b|\b\d{5,}\b")
_OWN_NAME = re.compile(
    r"\b(?:my name is|i am called|i'm called|this is)\s+[A-Z][a-z]+|\b(?:i am|i'm)\s+[A-Z][a-z]+\b"
)


@dataclass(frozen=True)
class CacheHitResult:
    """A served cache entry: what to stream and how close it was."""

    entry_id: int
    answer: str
    sources: list[dict[str, Any]]
    similarity: float
    guard_score: float
    tier: str
    cached_question: str


@dataclass
class CacheLookup:
    """The outcome of a lookup; the vector is kept so a miss can be stored without re-embedding."""

    hit: CacheHitResult | None = None
    vector: list[float] | None = None
    bypass_reason: str = ""
    rejected: list[dict[str, Any]] = field(default_factory=list)


def cache_bypass_reason(*, question: str) -> str:
    """Why a question must not use the cache at all ('' when it may)."""
    if not settings.CACHE_ENABLED:
        return "disabled"
    if _PRESENT.search(question):
        return "present_or_personal"
    return ""


def personal_details(text: str) -> bool:
    """Whether a text holds an e-mail, a phone/order/account number or a customer's own name."""
    return bool(_EMAIL.search(text) or _PHONE_OR_ID.search(text) or _OWN_NAME.search(text))


def cache_shareable(
    *, question: str, answer: str, history_used: bool, customer_texts: list[str] | None = None
) -> bool:
    """Whether an answer may be served to other customers (no history, no personal details)."""
    if history_used or personal_details(question) or personal_details(answer):
        return False
    # Anything distinctive the customer said earlier (numbers, e-mails, names) must not reappear.
    for text in customer_texts or []:
        for token in _EMAIL.findall(text) + _PHONE_OR_ID.findall(text):
            if token.strip() and token.strip() in answer:
                return False
        for match in re.finditer(r"\b[A-Z][a-z]{2,}\b", text):
            if match.start() > 0 and re.search(rf"\b{re.escape(match.group())}\b", answer):
                return False
    return True


def _versions_current(versions: dict[str, int], current: dict[int, int]) -> bool:
    return all(current.get(int(doc_id)) == version for doc_id, version in versions.items())


def _lookup_sync(*, question: str, vector: list[float], message_id: int | None) -> CacheLookup:
    result = CacheLookup(vector=vector)
    threshold = settings.CACHE_SIMILARITY_THRESHOLD
    queryset = CacheEntry.objects.filter(active=True)
    if settings.CACHE_TTL_SECONDS > 0:
        cutoff = timezone.now() - timedelta(seconds=settings.CACHE_TTL_SECONDS)
        queryset = queryset.filter(created_at__gte=cutoff)
    candidates = list(
        queryset.annotate(distance=CosineDistance("embedding", vector)).order_by("distance")[
            : settings.CACHE_CANDIDATES
        ]
    )
    candidates = [c for c in candidates if 1.0 - c.distance >= threshold]
    if not candidates:
        return result
    doc_ids = {int(d) for c in candidates for d in c.document_versions}
    current = dict(
        KnowledgeDocument.objects.filter(
            id__in=doc_ids, status=KnowledgeDocument.Status.READY
        ).values_list("id", "version")
    )
    for entry in candidates:
        similarity = 1.0 - entry.distance
        if not _versions_current(entry.document_versions, current):
            # The signal may have been missed (another process, a crash): retire it here too.
            CacheEntry.objects.filter(id=entry.id).update(active=False, retired_reason="stale")
            result.rejected.append({"entry_id": entry.id, "reasons": ["stale"]})
            continue
        decision = guard_check(
            question=question,
            cached_question=entry.question,
            cosine=similarity,
            min_score=settings.CACHE_GUARD_MIN_SCORE,
        )
        if not decision.accept:
            result.rejected.append({"entry_id": entry.id, "reasons": list(decision.reasons)})
            continue
        with transaction.atomic():
            CacheEntry.objects.filter(id=entry.id).update(
                hit_count=F("hit_count") + 1, last_hit_at=timezone.now()
            )
            CacheHit.objects.create(
                entry=entry,
                question=question,
                similarity=similarity,
                guard_score=decision.score,
                message_id=message_id,
            )
        result.hit = CacheHitResult(
            entry_id=entry.id,
            answer=entry.answer,
            sources=list(entry.sources),
            similarity=round(similarity, 4),
            guard_score=round(decision.score, 4),
            tier=entry.tier,
            cached_question=entry.question,
        )
        return result
    return result


async def cache_lookup(
    *, question: str, message_id: int | None = None, vector: list[float] | None = None
) -> CacheLookup:
    """Find a cached answer that may be served for this standalone question (records the hit)."""
    bypass = cache_bypass_reason(question=question)
    if bypass:
        return CacheLookup(bypass_reason=bypass)
    if vector is None:
        vector = (await get_embedder().aembed([question]))[0].tolist()
    return await sync_to_async(_lookup_sync)(
        question=question, vector=vector, message_id=message_id
    )


def _store_sync(
    *,
    question: str,
    vector: list[float],
    answer: str,
    sources: list[dict[str, Any]],
    tier: str,
    score: float | None,
    cost: Decimal,
) -> CacheEntry | None:
    versions = {
        str(s["document_id"]): int(s["document_version"])
        for s in sources
        if s.get("document_id") is not None and s.get("document_version") is not None
    }
    current = dict(
        KnowledgeDocument.objects.filter(
            id__in=[int(d) for d in versions], status=KnowledgeDocument.Status.READY
        ).values_list("id", "version")
    )
    if not _versions_current(versions, current):
        return None  # a document changed while the answer was being written
    return CacheEntry.objects.create(
        question=question,
        embedding=vector,
        answer=answer,
        sources=sources,
        document_versions=versions,
        tier=tier,
        score=score,
        cost=cost,
    )


async def cache_store(
    *,
    question: str,
    answer: str,
    sources: list[dict[str, Any]],
    tier: str,
    score: float | None = None,
    cost: Decimal | float = Decimal("0"),
    vector: list[float] | None = None,
    history_used: bool = False,
    customer_texts: list[str] | None = None,
) -> int | None:
    """Store an accepted, grounded answer for others when it is safe to share; the entry id or None."""
    if not answer.strip() or not sources or cache_bypass_reason(question=question):
        return None  # an "I don't know" cites nothing: never cached
    if not cache_shareable(
        question=question, answer=answer, history_used=history_used, customer_texts=customer_texts
    ):
        return None
    if vector is None:
        vector = (await get_embedder().aembed([question]))[0].tolist()
    entry = await sync_to_async(_store_sync)(
        question=question,
        vector=vector,
        answer=answer,
        sources=sources,
        tier=tier,
        score=score,
        cost=Decimal(str(cost)),
    )
    return entry.id if entry else None


def cache_invalidate_document(*, document_id: int) -> int:
    """Retire every active entry that cited this document; the number retired."""
    return CacheEntry.objects.filter(
        active=True, document_versions__has_key=str(document_id)
    ).update(active=False, retired_reason="document_changed")


def _on_document_changed(sender: Any, document_id: int, **kwargs: Any) -> None:
    cache_invalidate_document(document_id=document_id)


document_changed.connect(_on_document_changed, dispatch_uid="retrieval_cache_invalidate")


async def cache_false_hit(*, message_id: int) -> bool:
    """A thumbs-down on a cached answer: mark the hit false and take the entry out of service."""

    def mark() -> bool:
        hit = CacheHit.objects.filter(message_id=message_id).select_related("entry").first()
        if hit is None:
            return False
        with transaction.atomic():
            CacheHit.objects.filter(id=hit.id).update(false_hit=True)
            CacheEntry.objects.filter(id=hit.entry_id).update(
                active=False, retired_reason="thumbs_down"
            )
        return True

    return await sync_to_async(mark)()


def cache_stats() -> dict[str, Any]:
    """Entries, hits, false hits and the estimated cost saved (the original answers' cost per hit)."""
    hits = CacheHit.objects.count()
    false_hits = CacheHit.objects.filter(false_hit=True).count()
    saved = CacheHit.objects.aggregate(total=Sum("entry__cost"))["total"] or Decimal("0")
    return {
        "entries": CacheEntry.objects.count(),
        "active_entries": CacheEntry.objects.filter(active=True).count(),
        "hits": hits,
        "false_hits": false_hits,
        "false_hit_rate": round(false_hits / hits, 4) if hits else None,
        "estimated_cost_saved": float(saved),
        "threshold": settings.CACHE_SIMILARITY_THRESHOLD,
        "guard_min_score": settings.CACHE_GUARD_MIN_SCORE,
        "ttl_seconds": settings.CACHE_TTL_SECONDS,
    }
