"""Read side of the knowledge base: hybrid search (pgvector HNSW cosine + Postgres full text).

Both methods rank their own candidates; the lists are fused by reciprocal rank (RRF:
score = sum over methods of 1 / (RETRIEVAL_RRF_K + rank)). Full text is an OR of the
question's words ranked by ts_rank: on SQuAD it beat ts_rank_cd, which rewards covers of
several terms and so favours AND-like matches (bench/retrieval_quality.py, README). The relevance floor works on
cosine similarity, which stays comparable across questions where RRF scores do not:

- if even the closest passage's cosine is below `min_similarity`, nothing is returned
  (the pipeline answers "I don't know");
- otherwise each fused passage is kept if its own cosine reaches the floor or it matched the
  full-text query (a keyword hit, e.g. an order number or product name, that embeddings miss).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction

from retrieval.embedders import get_embedder
from retrieval.language import adetect_language, text_search_config

MODES = ("hybrid", "vector", "text")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Passage:
    """A retrieved passage as plain data (what the pipeline, prompt and scorer see)."""

    chunk_id: int
    document_id: int
    document_version: int
    title: str
    heading: str
    text: str
    similarity: float  # cosine similarity of the passage to the question
    score: float = 0.0  # fused RRF score (the ranking key in hybrid mode)
    vector_rank: int | None = None  # 1-based rank among vector candidates, None if absent
    text_rank: int | None = None  # 1-based rank among full-text matches, None if no match
    rerank_score: float | None = None  # cross-encoder logit (retrieval.rerank); None: not reranked
    page: int | None = None  # 1-based page of a paged source (PDF, slides); None: not paged
    # A web document's live page, at the passage's section (retrieval.web); "" for files.
    url: str = ""

    @property
    def relevance(self) -> float | None:
        """The cross-encoder's relevance as a probability (sigmoid of its logit); None: not reranked."""
        if self.rerank_score is None:
            return None
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, self.rerank_score))))


def text_query(question: str) -> str:
    """An OR query of the question's words for to_tsquery (stop words are dropped by Postgres)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(question) if len(w) > 1))
    return " | ".join(words[:32])


# pgvector refuses a larger hnsw.ef_search (every search would fail); iterative scans still
# return more candidates than this when asked.
HNSW_EF_SEARCH_MAX = 1000
# Seconds the word statistics are reused: ANALYZE (autovacuum) refreshes them far less often.
COMMON_WORDS_TTL = 300.0
# Words matching fewer passages than this share of the budget are left out of the list
# words_kept looks words up in: 32 of them (text_query's cap) add at most one budget more.
_COMMON_SHARE = 1 / 32
_common: dict[str, tuple[float, dict[str, float]]] = {}


def common_words(cursor, max_matches: int) -> dict[str, float]:  # noqa: ANN001
    """Lexemes of the passages' full text that match many passages, with their estimated
    counts: from pg_stats (most_common_elems of search_vector, times the table's rows), read
    once per COMMON_WORDS_TTL per database (reading it costs milliseconds, the search one).
    At a million passages there are thousands: they stay in this process, never sent with a
    query (quoting them into each query took longer than the full-text search itself)."""
    key = f"{cursor.db.alias}:{cursor.db.settings_dict['NAME']}:{max_matches}"
    cached = _common.get(key)
    if cached and time.monotonic() - cached[0] < COMMON_WORDS_TTL:
        return cached[1]
    cursor.execute(
        """
        SELECT e.lexeme, e.freq * t.reltuples
        FROM pg_stats s
        JOIN pg_class t ON t.oid = 'retrieval_chunk'::regclass
        CROSS JOIN LATERAL unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs)
            AS e(lexeme, freq)
        WHERE s.schemaname = current_schema() AND s.tablename = 'retrieval_chunk'
          AND s.attname = 'search_vector' AND e.lexeme IS NOT NULL
          AND e.freq * t.reltuples >= %s
        """,
        [max_matches * _COMMON_SHARE],
    )
    matches = {lexeme: float(count) for lexeme, count in cursor.fetchall()}
    _common[key] = (time.monotonic(), matches)
    return matches


def words_kept(lexemes: list[str], common: dict[str, float], max_matches: int) -> list[str]:
    """The question's lexemes the full-text half searches for: rarest first while the passages
    they match stay within max_matches (all of them when it is 0 or less).

    ts_rank reads every passage matching any word, so a word in a tenth of a million passages
    would make the text half the slow one, and ts_rank weighs words without their rarity, so
    such a word adds cost, not signal. A word missing from `common` is rare and always kept,
    so a small knowledge base loses no word."""
    if max_matches <= 0:
        return list(lexemes)
    kept, total = [], 0.0
    for lexeme in sorted(lexemes, key=lambda w: (common.get(w, 0.0), w)):
        total += common.get(lexeme, 0.0)
        if total > max_matches:
            break
        kept.append(lexeme)
    return kept


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


# The candidates come from the HNSW index over the embedding cast to halfvec (the index's own
# expression, retrieval.models.Chunk: {dims} is EMBEDDING_DIMENSIONS); they are ranked by the
# float32 distance, so half precision can only change which passages are candidates.
# The full-text half searches for the question's words words_kept chose (%(lexemes)s, stemmed
# as the passages were).
_SQL = """
WITH q AS MATERIALIZED (
    SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query
    FROM unnest(%(lexemes)s::text[]) AS w(lexeme)
), vec AS MATERIALIZED (
    SELECT c.id, c.embedding <=> %(v)s::vector AS distance
    FROM retrieval_chunk c JOIN retrieval_knowledgedocument d ON d.id = c.document_id
    WHERE c.version = d.served_version AND %(use_vector)s
    ORDER BY c.embedding::halfvec({dims}) <=> %(v)s::halfvec({dims})
    LIMIT %(n)s
), vec_ranked AS (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS rnk FROM vec
), txt AS MATERIALIZED (
    SELECT c.id, ts_rank(c.search_vector, q.query) AS rank
    FROM retrieval_chunk c
    JOIN retrieval_knowledgedocument d ON d.id = c.document_id
    CROSS JOIN q
    WHERE c.version = d.served_version AND %(use_text)s AND c.search_vector @@ q.query
    ORDER BY rank DESC, c.id
    LIMIT %(n)s
), txt_ranked AS (
    SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS rnk FROM txt
), ids AS (
    SELECT id FROM vec_ranked UNION SELECT id FROM txt_ranked
)
SELECT c.id, c.document_id, c.version, COALESCE(NULLIF(d.title, ''), d.source_name), c.heading,
       c.text, 1 - (c.embedding <=> %(v)s::vector) AS similarity, vr.rnk, tr.rnk, c.page
FROM ids
JOIN retrieval_chunk c ON c.id = ids.id
JOIN retrieval_knowledgedocument d ON d.id = c.document_id
LEFT JOIN vec_ranked vr ON vr.id = c.id
LEFT JOIN txt_ranked tr ON tr.id = c.id
"""


def passages_rank(
    *, vector: list[float], question: str, mode: str, candidates: int, language: str = ""
) -> list[Passage]:
    """All candidates of the chosen method(s), best first by RRF (sync; runs in a transaction).

    `language` is the question's (ISO 639-1; "" when not detected: LANGUAGE_DEFAULT's
    configuration is used then): its words are stemmed as that language's documents were.
    """
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; valid: {', '.join(MODES)}")
    tsq = text_query(question)
    use_text = mode in ("hybrid", "text") and bool(tsq)
    max_matches = settings.RETRIEVAL_TEXT_MAX_MATCHES
    rrf_k = settings.RETRIEVAL_RRF_K
    with transaction.atomic(), connection.cursor() as cursor:
        # Both settings last for this transaction only (set_config's `true`); the same round
        # trip stems the question's words as the passages' were. Iterative scans keep the HNSW
        # index returning candidates when the served-version filter drops some (pgvector 0.8).
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " tsvector_to_array(retrieval_tsvector(%s, '', %s))",
            [
                str(min(HNSW_EF_SEARCH_MAX, max(candidates, settings.RETRIEVAL_HNSW_EF_SEARCH))),
                text_search_config(language or settings.LANGUAGE_DEFAULT),
                tsq.replace(" | ", " ") if use_text else "",
            ],
        )
        lexemes = cursor.fetchone()[2] or []
        if lexemes and max_matches > 0:
            lexemes = words_kept(lexemes, common_words(cursor, max_matches), max_matches)
        params = {
            "v": _vector_literal(vector),
            "n": candidates,
            "lexemes": lexemes,
            "use_vector": mode in ("hybrid", "vector"),
            "use_text": bool(lexemes),
        }
        cursor.execute(_SQL.replace("{dims}", str(settings.EMBEDDING_DIMENSIONS)), params)
        rows = cursor.fetchall()
    passages = [
        Passage(
            chunk_id=row[0],
            document_id=row[1],
            document_version=row[2],
            title=row[3],
            heading=row[4],
            text=row[5],
            similarity=float(row[6]),
            score=sum(1.0 / (rrf_k + r) for r in (row[7], row[8]) if r is not None),
            vector_rank=row[7],
            text_rank=row[8],
            page=row[9],
        )
        for row in rows
    ]
    passages.sort(key=lambda p: (-p.score, -p.similarity, p.chunk_id))
    return passages


def passages_filter(passages: list[Passage], *, k: int, min_similarity: float) -> list[Passage]:
    """Apply the relevance floor (see the module docstring) and keep the top k."""
    if not passages or max(p.similarity for p in passages) < min_similarity:
        return []
    kept = [p for p in passages if p.similarity >= min_similarity or p.text_rank is not None]
    return kept[:k]


async def passages_search(
    *,
    question: str,
    k: int,
    min_similarity: float,
    mode: str | None = None,
    candidates: int | None = None,
    vector: list[float] | None = None,
) -> list[Passage]:
    """Top-k passages of served document versions, best first; [] when nothing is relevant.

    `vector` is the question's embedding when the caller already has it (the answer cache's
    lookup embeds the same standalone question with the same embedder): no second embedding.
    """
    if vector is None:
        vector = (await get_embedder().aembed([question]))[0].tolist()
    ranked = await sync_to_async(passages_rank)(
        vector=list(vector),
        question=question,
        language=await adetect_language(question),
        mode=mode or settings.RETRIEVAL_MODE,
        candidates=max(k, candidates or settings.RETRIEVAL_CANDIDATES),
    )
    return passages_filter(ranked, k=k, min_similarity=min_similarity)
