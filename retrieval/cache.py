"""The semantic answer cache: guarded lookup, safe store, invalidation, thumbs-down, stats.

The pipeline calls `cache_lookup` with the standalone question before retrieval and
`cache_store` after an accepted, grounded answer, with plain data only. An entry is served
only when (1) its cosine similarity reaches CACHE_SIMILARITY_THRESHOLD, (2) the learned
decision (retrieval/pair_model.py) finds none of its kept rule families vetoing (negation,
numbers, names, opposites, ... in retrieval/guard.py) and puts the probability that both ask
the same thing at or above its cut, (3) it is younger than CACHE_TTL_SECONDS and (4) every
document it cited still serves the version it cited (checked at lookup, not only when
document_changed arrives). When a new version of a document is served, an entry whose passages
of it are all unchanged in the new version is kept, pointed at the new passages; the others
are retired.

What goes in is shared with every customer, so it is stored only when safe to share
(`cache_share_refusal`): a first-turn question that gives no personal details and no
instructions, and an answer its cited passages support, with no link, e-mail address or phone
number the passages do not give. A new entry is served only to the session that produced it
until CACHE_SHARE_MIN_SESSIONS different sessions produced agreeing answers for the same
question (or an admin approved it); a thumbs-down retires a shared entry only when
CACHE_RETIRE_VOTES different sessions gave one (an admin's retire acts alone).
"""

from __future__ import annotations

import json
import logging
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
from django.utils.crypto import salted_hmac

from retrieval import guard
from retrieval.db import ASYNC_COMMIT
from retrieval.embedders import get_embedder, vector_literal
from retrieval.models import CacheDay, CacheEntry, CacheHit, Chunk, KnowledgeDocument
from retrieval.pair_model import guard_check, pair_model
from retrieval.signals import document_changed

logger = logging.getLogger(__name__)

# Questions about the present or about the customer's own things: never shared answers.
_PRESENT = re.compile(
    r"\b(today|tonight|now|right now|currently|current|latest|at the moment|this (?:week|month)|"
    r"yesterday|tomorrow|my (?:order|orders|parcel|package|delivery|refund|account|payment|"
    r"basket|cart|return|subscription))\b",
    re.IGNORECASE,
)
# A citation [n] of one of the answer's numbered sources.
_CITATION = re.compile(r"\[(\d{1,2})\]")
# Longer questions are refused for sharing: a popular question padded with a payload tuned to
# stay near it in the embedding space is the poisoning recipe (real questions are short).
MAX_SHARED_QUESTION_CHARS = 300


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


def session_digest(session: str) -> str:
    """A keyed digest of a session key: who produced or was served an entry, without storing
    anything that could be replayed as a session cookie."""
    return salted_hmac("retrieval.cache.session", session).hexdigest()[:32] if session else ""


def cache_share_refusal(
    *,
    question: str,
    answer: str,
    history_used: bool,
    passages: list[str] | None = None,
    customer_texts: list[str] | None = None,
) -> str:
    """Why an answer must not be shared with other customers ('' when it may): the question
    leans on history, is instruction-like, over-long or personal; or the answer holds a link,
    e-mail address or phone number its passages do not give, or someone's personal details."""
    region = settings.CACHE_PHONE_REGION
    if history_used:
        return "history"
    if len(question) > MAX_SHARED_QUESTION_CHARS:
        return "long_question"
    if guard.instruction_like(question):
        return "instruction"
    if guard.contact_details(question, region=region) or guard.personal_details(
        question, region=region
    ):
        return "personal_question"
    given = passages or []
    if guard.contact_details_unsupported(answer, given, region=region):
        return "unsupported_contact"
    # E-mail addresses and phone numbers were compared with the passages' own just above.
    answer_kinds = guard.personal_details(answer, region=region, given="\n".join(given))
    if set(answer_kinds) - {"email", "phone"}:
        return "personal_answer"
    # Anything distinctive the customer said earlier (numbers, e-mails, names) must not reappear.
    for text in customer_texts or []:
        for token in guard.personal_tokens(text, region=region):
            if token in answer.lower():
                return "personal_answer"
        for match in re.finditer(r"\b[A-Z][a-z]{2,}\b", text):
            if match.start() > 0 and re.search(rf"\b{re.escape(match.group())}\b", answer):
                return "personal_answer"
    return ""


def cache_shareable(
    *,
    question: str,
    answer: str,
    history_used: bool,
    passages: list[str] | None = None,
    customer_texts: list[str] | None = None,
) -> bool:
    """Whether an answer may be served to other customers (see `cache_share_refusal`)."""
    return not cache_share_refusal(
        question=question,
        answer=answer,
        history_used=history_used,
        passages=passages,
        customer_texts=customer_texts,
    )


def cited_sources(answer: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sources an answer rests on: those it cites by a valid [n], in the order first cited;
    without one, the most similar source (as the scorer and the answerability check take the
    best passage for an answer that cites none: small models often leave the [n] out)."""
    by_number = {s.get("n"): s for s in sources}
    numbers = dict.fromkeys(int(n) for n in _CITATION.findall(answer))
    cited = [by_number[n] for n in numbers if n in by_number]
    if cited or not sources:
        return cited
    return [max(sources, key=lambda s: float(s.get("similarity") or 0.0))]


def cache_support_refusal(
    *, answer: str, cited_passages: list[str], check_yes: float | None
) -> str:
    """Why the passages do not support an answer well enough to share it ('' when they do).

    The rule: the answer rests on at least one passage (`cited_sources`); when the check ran,
    its P(yes) that the cited passage states the answer is at least CACHE_SHARE_MIN_CHECK; and
    at least CACHE_SHARE_MIN_SUPPORT of the answer's content words are found in the cited
    passages. The scorer's acceptance comes first (only accepted answers reach the cache), but a
    high score alone says the answer looks confident, not that it says what the passages say.
    """
    if not cited_passages:
        return "no_passage"
    if check_yes is not None and check_yes < settings.CACHE_SHARE_MIN_CHECK:
        return "check"
    if guard.content_support(answer, cited_passages) < settings.CACHE_SHARE_MIN_SUPPORT:
        return "unsupported"
    return ""


def _versions_current(versions: dict[str, int], current: dict[int, int]) -> bool:
    return all(current.get(int(doc_id)) == version for doc_id, version in versions.items())


_ENTRY, _HIT, _DAY, _DOC = (
    CacheEntry._meta.db_table,
    CacheHit._meta.db_table,
    CacheDay._meta.db_table,
    KnowledgeDocument._meta.db_table,
)
# Nearest active entries (HNSW) and, in the same round trip, whether every document they cite
# still serves the version they cited (as search does: a replacement being ingested leaves the
# old version served): the hit path is latency-critical, so few queries.
_CANDIDATES_SQL = f"""
SELECT e.id, e.question, e.answer, e.sources, e.tier, 1 - e.distance AS similarity,
       NOT EXISTS (
         SELECT 1 FROM jsonb_each_text(e.document_versions) AS dv
         LEFT JOIN {_DOC} d ON d.id = dv.key::bigint AND d.served_version = dv.value::int
         WHERE d.id IS NULL
       ) AS fresh
FROM (
  SELECT id, question, answer, sources, tier, document_versions,
         embedding <=> %(v)s::vector AS distance
  FROM {_ENTRY}
  WHERE active AND (created_at >= %(cutoff)s OR curated_id IS NOT NULL)
    -- Shared (or an admin's), or produced by this very session.
    AND (shared_at IS NOT NULL OR curated_id IS NOT NULL
         OR (%(session)s <> '' AND producers @> jsonb_build_array(%(session)s::text)))
    -- Not again to a session that gave it a thumbs-down.
    AND NOT EXISTS (
      SELECT 1 FROM {_HIT} h
      WHERE h.entry_id = {_ENTRY}.id AND h.false_hit AND %(session)s <> ''
        AND h.session = %(session)s
    )
  ORDER BY embedding <=> %(v)s::vector
  LIMIT %(k)s
) AS e
ORDER BY e.distance
"""
# Every lookup updates today's counter row, and every hit its entry's row: the same few rows
# for every process. A row stays locked until its transaction's commit is flushed to disk, so
# with synchronous commits those rows would let one lookup through per flush across the whole
# deployment. These statements commit asynchronously (retrieval.db.ASYNC_COMMIT): a crash of
# PostgreSQL may lose the last fraction of a second of counts and hit records, and the answer
# saved right after commits synchronously, which flushes them with it.
_COUNT_INSERT = (
    f"INSERT INTO {_DAY} (day, lookups, hits, bypassed) "
    "SELECT %(day)s, 1, %(hit)s, %(bypassed)s FROM async_commit "
    f"ON CONFLICT (day) DO UPDATE SET lookups = {_DAY}.lookups + 1, "
    f"hits = {_DAY}.hits + EXCLUDED.hits, bypassed = {_DAY}.bypassed + EXCLUDED.bypassed"
)
_COUNT_SQL = f"WITH {ASYNC_COMMIT}\n{_COUNT_INSERT}"
# A served hit: count it on the entry, record it, count the lookup; one statement.
_HIT_SQL = f"""
WITH {ASYNC_COMMIT}, entry AS (
  UPDATE {_ENTRY} SET hit_count = hit_count + 1, last_hit_at = %(now)s WHERE id = %(entry)s
), hit AS (
  INSERT INTO {_HIT} (entry_id, question, similarity, guard_score, message_id, session,
                      false_hit, created_at)
  VALUES (%(entry)s, %(question)s, %(similarity)s, %(score)s, %(message)s, %(session)s, false,
          %(now)s)
)
{_COUNT_INSERT}
"""


def _count(*, hit: bool, bypassed: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_SQL,
            {
                "day": timezone.localdate(),
                "hit": int(hit),
                "bypassed": int(bypassed),
                "alone": not connection.in_atomic_block,
            },
        )


def _ttl_cutoff() -> datetime:
    """Entries stored before this are too old to serve (CACHE_TTL_SECONDS; 0: no expiry)."""
    ttl = settings.CACHE_TTL_SECONDS
    return timezone.now() - timedelta(seconds=ttl) if ttl > 0 else datetime.min.replace(tzinfo=UTC)


def _lookup_sync(
    *,
    question: str,
    vector: list[float],
    message_id: int | None,
    session: str,
    literal: str | None = None,
) -> CacheLookup:
    result = CacheLookup(vector=vector)
    cutoff = _ttl_cutoff()
    with connection.cursor() as cursor:
        cursor.execute(
            _CANDIDATES_SQL,
            {
                "v": literal or vector_literal(vector),
                "cutoff": cutoff,
                "k": settings.CACHE_CANDIDATES,
                "session": session,
            },
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
                    "session": session,
                    "day": timezone.localdate(),
                    "hit": 1,
                    "bypassed": 0,
                    "alone": not connection.in_atomic_block,
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


# Vectors of recently asked questions, by exact text: popular questions repeat word for word, and
# embedding is most of a hit's time. Only vectors are kept here, each with its SQL literal
# (formatting 384 numbers costs about half a millisecond a lookup); answers live in the
# database, so nothing can go stale. Bounded, least recently used out first.
_VECTORS: OrderedDict[str, tuple[list[float], str]] = OrderedDict()


async def _question_vector(question: str) -> tuple[list[float], str]:
    """The question's embedding and its SQL literal, remembered by exact text."""
    known = _VECTORS.get(question)
    if known is not None:
        _VECTORS.move_to_end(question)
        return known
    vector = (await get_embedder().aembed([question]))[0].tolist()
    known = (vector, vector_literal(vector))
    if settings.CACHE_VECTOR_MEMORY > 0:
        _VECTORS[question] = known
        while len(_VECTORS) > settings.CACHE_VECTOR_MEMORY:
            _VECTORS.popitem(last=False)
    return known


async def cache_lookup(
    *,
    question: str,
    message_id: int | None = None,
    vector: list[float] | None = None,
    session: str = "",
) -> CacheLookup:
    """Find a cached answer that may be served for this standalone question to this session
    (its key; '' for none: shared entries only), and record the hit."""
    bypass = cache_bypass_reason(question=question)
    if bypass:
        if bypass != "disabled":
            await sync_to_async(_count)(hit=False, bypassed=True)
        return CacheLookup(bypass_reason=bypass)
    literal = None
    if vector is None:
        vector, literal = await _question_vector(question)
    return await sync_to_async(_lookup_sync)(
        question=question,
        vector=vector,
        message_id=message_id,
        session=session_digest(session),
        literal=literal,
    )


# Pending entries for the same question: the store's candidates to agree with (nearest first;
# the guard and the answers' agreement decide).
_PENDING_SQL = f"""
SELECT id, question, answer, sources, producers, 1 - distance AS similarity
FROM (
  SELECT id, question, answer, sources, producers, embedding <=> %(v)s::vector AS distance
  FROM {_ENTRY}
  WHERE active AND shared_at IS NULL AND curated_id IS NULL AND created_at >= %(cutoff)s
  ORDER BY embedding <=> %(v)s::vector
  LIMIT %(k)s
) AS e
ORDER BY distance
"""


def _agreeing_entry(
    *, question: str, vector: list[float], answer: str, cited: set[int], session: str
) -> int | None:
    """A pending entry for the same question whose answer agrees with this one (the same cited
    passage, the same numbers, mostly the same words), another session's first; its id or None."""
    cutoff = _ttl_cutoff()
    with connection.cursor() as cursor:
        cursor.execute(
            _PENDING_SQL,
            {
                "v": vector_literal(vector),
                "cutoff": cutoff,
                "k": settings.CACHE_CANDIDATES,
            },
        )
        rows = cursor.fetchall()
    own = None
    for entry_id, cached_question, cached_answer, sources, producers, similarity in rows:
        if similarity < settings.CACHE_SIMILARITY_THRESHOLD:
            break
        if isinstance(sources, str):
            sources = json.loads(sources)
        their_cited = {s.get("chunk_id") for s in cited_sources(cached_answer, sources)}
        if not cited & their_cited or not guard.answers_agree(answer, cached_answer):
            continue
        decision = guard_check(
            question=question,
            cached_question=cached_question,
            cosine=similarity,
            min_score=settings.CACHE_GUARD_MIN_SCORE,
        )
        if not decision.accept:
            continue
        if isinstance(producers, str):
            producers = json.loads(producers)
        if session not in producers:
            return entry_id
        own = own or entry_id
    return own


def _store_sync(
    *,
    question: str,
    vector: list[float],
    answer: str,
    sources: list[dict[str, Any]],
    cited: set[int],
    tier: str,
    score: float | None,
    cost: Decimal,
    session: str,
) -> CacheEntry | None:
    versions = {
        str(s["document_id"]): int(s["document_version"])
        for s in sources
        if s.get("document_id") is not None and s.get("document_version") is not None
    }
    # What the lookup serves by: the versions the documents serve (a replacement still being
    # ingested leaves the old one served; the carry-over moves its answers on or retires them).
    current = dict(
        KnowledgeDocument.objects.filter(id__in=[int(d) for d in versions]).values_list(
            "id", "served_version"
        )
    )
    if not _versions_current(versions, current):
        return None  # a document changed while the answer was being written
    with transaction.atomic():
        agreeing = _agreeing_entry(
            question=question, vector=vector, answer=answer, cited=cited, session=session
        )
        if agreeing is not None:
            # Another session was given the same answer to the same question: one more voice.
            entry = CacheEntry.objects.select_for_update().get(id=agreeing)
            if session not in entry.producers:
                entry.producers = [*entry.producers, session]
            if len(entry.producers) >= settings.CACHE_SHARE_MIN_SESSIONS and not entry.shared_at:
                entry.shared_at = timezone.now()
            entry.save(update_fields=["producers", "shared_at"])
            return entry
        return CacheEntry.objects.create(
            question=question,
            embedding=vector,
            answer=answer,
            sources=sources,
            document_versions=versions,
            tier=tier,
            score=score,
            cost=cost,
            producers=[session],
            shared_at=timezone.now() if settings.CACHE_SHARE_MIN_SESSIONS <= 1 else None,
        )


def _passage_texts(sources: list[dict[str, Any]]) -> list[str]:
    ids = [s["chunk_id"] for s in sources if isinstance(s.get("chunk_id"), int)]
    chunks = Chunk.objects.filter(id__in=ids).only("heading", "text").in_bulk(ids)
    return [f"{c.heading}\n{c.text}" for i in ids if (c := chunks.get(i)) is not None]


async def cache_store(
    *,
    question: str,
    answer: str,
    sources: list[dict[str, Any]],
    tier: str,
    session: str,
    score: float | None = None,
    check_yes: float | None = None,
    cost: Decimal | float = Decimal("0"),
    vector: list[float] | None = None,
    history_used: bool = False,
    customer_texts: list[str] | None = None,
) -> int | None:
    """Store an accepted, grounded answer given to this session (its key) when it is safe to
    share (`cache_share_refusal`) and its cited passages support it (`cache_support_refusal`;
    `check_yes` is the answerability check's P(yes) when it ran). The entry id (an earlier
    session's agreeing entry, now with one more producer) or None."""
    if not answer.strip() or not sources or cache_bypass_reason(question=question):
        return None  # an "I don't know" cites nothing: never cached
    cited = cited_sources(answer, sources)
    passages = await sync_to_async(_passage_texts)(cited)
    refusal = cache_support_refusal(
        answer=answer, cited_passages=passages, check_yes=check_yes
    ) or cache_share_refusal(
        question=question,
        answer=answer,
        history_used=history_used,
        passages=passages,
        customer_texts=customer_texts,
    )
    if refusal:
        logger.info("answer not cached: %s", refusal)
        return None
    if vector is None:
        vector = (await get_embedder().aembed([question]))[0].tolist()
    entry = await sync_to_async(_store_sync)(
        question=question,
        vector=vector,
        answer=answer,
        sources=sources,
        cited={s["chunk_id"] for s in cited},
        tier=tier,
        score=score,
        cost=Decimal(str(cost)),
        session=session_digest(session) or "-",
    )
    return entry.id if entry else None


def cache_approve(*, entry_ids: list[int], user: Any = None) -> int:
    """An admin's approval: these entries are served to every customer now; the number changed."""
    return CacheEntry.objects.filter(id__in=entry_ids, active=True, shared_at__isnull=True).update(
        shared_at=timezone.now(), approved_by=user
    )


def cache_invalidate_document(*, document_id: int) -> int:
    """Retire every active entry that cited this document; the number retired."""
    return CacheEntry.objects.filter(
        active=True, document_versions__has_key=str(document_id)
    ).update(active=False, retired_reason="document_changed")


def cache_carry_over(*, document_id: int, version: int, carried: dict[int, int]) -> tuple[int, int]:
    """A new version of a document is served: each active entry citing an earlier one is kept
    when every passage of the document it showed is in the new version unchanged (`carried`:
    old passage id to new), its sources then pointing at the new passages; the others are
    retired. Returns (kept, retired).

    What an answer rests on is the passages it was shown: an edit elsewhere in the document
    leaves it as true as it was, and an approved answer stays approved."""
    key = str(document_id)
    title = KnowledgeDocument.objects.filter(id=document_id).values_list("title", flat=True).first()
    passages = Chunk.objects.filter(id__in=list(carried.values())).only("heading", "page")
    passages = {c.id: c for c in passages}
    kept, retired = 0, []
    with transaction.atomic():
        entries = CacheEntry.objects.select_for_update().filter(
            active=True, document_versions__has_key=key
        )
        for entry in entries.only("id", "sources", "document_versions"):
            if entry.document_versions.get(key) == version:
                continue
            sources = _sources_carried(
                entry.sources, document_id, version, title, carried, passages
            )
            if sources is None:
                retired.append(entry.id)
                continue
            entry.sources = sources
            entry.document_versions = {**entry.document_versions, key: version}
            entry.save(update_fields=["sources", "document_versions"])
            kept += 1
        CacheEntry.objects.filter(id__in=retired).update(
            active=False, retired_reason="document_changed"
        )
    return kept, len(retired)


def _sources_carried(
    sources: list[dict[str, Any]],
    document_id: int,
    version: int,
    title: str | None,
    carried: dict[int, int],
    passages: dict[int, Chunk],
) -> list[dict[str, Any]] | None:
    """An entry's sources with its passages of the document moved to the new version; None
    when one of them changed."""
    out = []
    for source in sources:
        if source.get("document_id") != document_id:
            out.append(source)
            continue
        old = source.get("chunk_id")
        new = carried.get(old)
        if new is None or new not in passages or title is None:
            return None
        url = source.get("url")
        out.append(
            {
                **source,
                "chunk_id": new,
                "document_version": version,
                "title": title,
                "heading": passages[new].heading,
                "page": passages[new].page,
                # A file's citation opens its passage page; a web page's, the live page.
                "url": f"/passages/{new}/" if url == f"/passages/{old}/" else url,
            }
        )
    return out


def _on_document_changed(
    sender: Any,
    document_id: int,
    version: int,
    deleted: bool = False,
    carried: dict[int, int] | None = None,
    **kwargs: Any,
) -> None:
    if deleted or carried == {}:
        cache_invalidate_document(document_id=document_id)
    elif carried:
        cache_carry_over(document_id=document_id, version=version, carried=carried)
    # carried None: the document's first version; no answer can cite it yet.


document_changed.connect(_on_document_changed, dispatch_uid="retrieval_cache_invalidate")


async def cache_false_hit(*, message_id: int) -> bool:
    """A thumbs-down on a cached answer: mark the hit false; take the entry out of service when
    only its producing session could be served it, or when CACHE_RETIRE_VOTES different
    sessions have now given it a thumbs-down. One customer alone cannot retire what others are
    served (an admin's retire can); that customer is not served it again either way."""

    def mark() -> bool:
        hit = CacheHit.objects.filter(message_id=message_id).select_related("entry").first()
        if hit is None:
            return False
        with transaction.atomic():
            CacheHit.objects.filter(id=hit.id).update(false_hit=True)
            # Locked: two votes at once count as two.
            entry = CacheEntry.objects.select_for_update().get(id=hit.entry_id)
            if entry.curated_id is not None or not entry.active:
                return True  # an admin's curated answer stays: the gap inbox gets the vote
            voters = {
                session or f"hit:{hit_id}"
                for hit_id, session in CacheHit.objects.filter(
                    entry_id=entry.id, false_hit=True
                ).values_list("id", "session")
            }
            if entry.shared_at is None or len(voters) >= settings.CACHE_RETIRE_VOTES:
                entry.active, entry.retired_reason = False, "thumbs_down"
                entry.save(update_fields=["active", "retired_reason"])
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
