"""The semantic answer cache: guarded lookup, safe store, invalidation, thumbs-down, stats.

The pipeline calls `cache_lookup` with the standalone question before retrieval and
`cache_store` after an accepted, grounded answer, with plain data only. An entry is served
only when (1) its cosine similarity reaches CACHE_SIMILARITY_THRESHOLD, (2) the learned
decision (retrieval/pair_model.py) finds none of its kept rule families vetoing (negation,
numbers, names, opposites, ... in retrieval/guard.py) and puts the probability that both ask
the same thing at or above its cut, (3) it is younger than CACHE_TTL_SECONDS and (4) every
document it cited still has the version it cited (checked at lookup, not only when
document_changed arrives).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from retrieval.embedders import get_embedder
from retrieval.models import CacheDay, CacheEntry, CacheHit, KnowledgeDocument
from retrieval.pair_model import guard_check, pair_model
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
_OWN_NAME = re.compile(r"\b(?i:my name is|i am called|i'm called|this is|i am|i'm)\s+[A-Z][a-z]+")


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


_ENTRY, _HIT, _DAY, _DOC = (
    CacheEntry._meta.db_table,
    CacheHit._meta.db_table,
    CacheDay._meta.db_table,
    KnowledgeDocument._meta.db_table,
)
# Nearest active entries (HNSW) and, in the same round trip, whether every document they cite
# still has the version they cited: the hit path is latency-critical, so few queries.
_CANDIDATES_SQL = f"""
SELECT e.id, e.question, e.answer, e.sources, e.tier, 1 - e.distance AS similarity,
       NOT EXISTS (
         SELECT 1 FROM jsonb_each_text(e.document_versions) AS dv
         LEFT JOIN {_DOC} d
           ON d.id = dv.key::bigint AND d.version = dv.value::int AND d.status = 'ready'
         WHERE d.id IS NULL
       ) AS fresh
FROM (
  SELECT id, question, answer, sources, tier, document_versions,
         embedding <=> %(v)s::vector AS distance
  FROM {_ENTRY}
  WHERE active AND (created_at >= %(cutoff)s OR curated_id IS NOT NULL)
  ORDER BY embedding <=> %(v)s::vector
  LIMIT %(k)s
) AS e
ORDER BY e.distance
"""
_COUNT_SQL = (
    f"INSERT INTO {_DAY} (day, lookups, hits, bypassed) VALUES (%(day)s, 1, %(hit)s, %(bypassed)s) "
    f"ON CONFLICT (day) DO UPDATE SET lookups = {_DAY}.lookups + 1, "
    f"hits = {_DAY}.hits + EXCLUDED.hits, bypassed = {_DAY}.bypassed + EXCLUDED.bypassed"
)
# A served hit: count it on the entry, record it, count the lookup; one statement.
_HIT_SQL = f"""
WITH entry AS (
  UPDATE {_ENTRY} SET hit_count = hit_count + 1, last_hit_at = %(now)s WHERE id = %(entry)s
), hit AS (
  INSERT INTO {_HIT} (entry_id, question, similarity, guard_score, message_id, false_hit,
                      created_at)
  VALUES (%(entry)s, %(question)s, %(similarity)s, %(score)s, %(message)s, false, %(now)s)
)
{_COUNT_SQL}
"""


def _count(*, hit: bool, bypassed: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_SQL, {"day": timezone.localdate(), "hit": int(hit), "bypassed": int(bypassed)}
        )


def _lookup_sync(*, question: str, vector: list[float], message_id: int | None) -> CacheLookup:
    result = CacheLookup(vector=vector)
    ttl = settings.CACHE_TTL_SECONDS
    cutoff = (
        timezone.now() - timedelta(seconds=ttl) if ttl > 0 else datetime.min.replace(tzinfo=UTC)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _CANDIDATES_SQL,
            {"v": _vector_literal(vector), "cutoff": cutoff, "k": settings.CACHE_CANDIDATES},
        )
        rows = cursor.fetchall()
    for entry_id, cached_question, answer, sources, tier, similarity, fresh in rows:
        if similarity < settings.CACHE_SIMILARITY_THRESHOLD:
            break  # ordered by distance: the rest are further still
        if isinstance(sources, str):
            sources = json.loads(sources)
        if not fresh:
            # The signal may have been missed (another process, a crash): retire it here too.
            CacheEntry.objects.filter(id=entry_id).update(active=False, retired_reason="stale")
            result.rejected.append({"entry_id": entry_id, "reasons": ["stale"]})
            continue
        decision = guard_check(
            question=question,
            cached_question=cached_question,
            cosine=similarity,
            min_score=settings.CACHE_GUARD_MIN_SCORE,
        )
        if not decision.accept:
            result.rejected.append({"entry_id": entry_id, "reasons": list(decision.reasons)})
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                _HIT_SQL,
                {
                    "now": timezone.now(),
                    "entry": entry_id,
                    "question": question,
                    "similarity": similarity,
                    "score": decision.score,
                    "message": message_id,
                    "day": timezone.localdate(),
                    "hit": 1,
                    "bypassed": 0,
                },
            )
        result.hit = CacheHitResult(
            entry_id=entry_id,
            answer=answer,
            sources=list(sources),
            similarity=round(similarity, 4),
            guard_score=round(decision.score, 4),
            tier=tier,
            cached_question=cached_question,
        )
        return result
    _count(hit=False, bypassed=False)
    return result


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


# Vectors of recently asked questions, by exact text: popular questions repeat word for word, and
# embedding is most of a hit's time. Only vectors are kept here (answers live in the database,
# so nothing can go stale); bounded, least recently used out first.
_VECTORS: OrderedDict[str, list[float]] = OrderedDict()


async def _question_vector(question: str) -> list[float]:
    vector = _VECTORS.get(question)
    if vector is not None:
        _VECTORS.move_to_end(question)
        return vector
    vector = (await get_embedder().aembed([question]))[0].tolist()
    if settings.CACHE_VECTOR_MEMORY > 0:
        _VECTORS[question] = vector
        while len(_VECTORS) > settings.CACHE_VECTOR_MEMORY:
            _VECTORS.popitem(last=False)
    return vector


async def cache_lookup(
    *, question: str, message_id: int | None = None, vector: list[float] | None = None
) -> CacheLookup:
    """Find a cached answer that may be served for this standalone question (records the hit)."""
    bypass = cache_bypass_reason(question=question)
    if bypass:
        if bypass != "disabled":
            await sync_to_async(_count)(hit=False, bypassed=True)
        return CacheLookup(bypass_reason=bypass)
    if vector is None:
        vector = await _question_vector(question)
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
            # An admin's curated answer stays: the thumbs-down reaches the gap inbox instead.
            CacheEntry.objects.filter(id=hit.entry_id, curated__isnull=True).update(
                active=False, retired_reason="thumbs_down"
            )
        return True

    return await sync_to_async(mark)()


def cache_stats() -> dict[str, Any]:
    """Entries, hits, false hits and the estimated cost saved (the original answers' cost per hit)."""
    hits = CacheHit.objects.count()
    false_hits = CacheHit.objects.filter(false_hit=True).count()
    saved = CacheHit.objects.filter(false_hit=False).aggregate(t=Sum("entry__cost"))["t"] or 0
    days = CacheDay.objects.aggregate(lookups=Sum("lookups"), day_hits=Sum("hits"))
    lookups = days["lookups"] or 0
    return {
        "lookups": lookups,
        "hit_rate": round((days["day_hits"] or 0) / lookups, 4) if lookups else None,
        "entries": CacheEntry.objects.count(),
        "active_entries": CacheEntry.objects.filter(active=True).count(),
        "hits": hits,
        "false_hits": false_hits,
        "false_hit_rate": round(false_hits / hits, 4) if hits else None,
        "estimated_cost_saved": float(saved),
        "threshold": settings.CACHE_SIMILARITY_THRESHOLD,
        # Unset, the learned decision's own cut applies: show the number in force.
        "guard_min_score": (
            pair_model().threshold
            if settings.CACHE_GUARD_MIN_SCORE is None
            else settings.CACHE_GUARD_MIN_SCORE
        ),
        "ttl_seconds": settings.CACHE_TTL_SECONDS,
    }
