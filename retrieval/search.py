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

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from psycopg.pq import TransactionStatus

from retrieval.embedders import get_embedder, vector_literal
from retrieval.language import adetect_language, text_search_config

logger = logging.getLogger(__name__)

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
# hnsw.ef_search by the index's size (RETRIEVAL_HNSW_EF_SEARCH = 0). Recall@10 against exact
# search (bench/retrieval_speed.py, synthetic MiniLM-like passages): at ef_search 200, 0.996-1.0
# from 30k to 150k passages, 0.988-0.990 at 200k, 0.964-0.975 at 300k and 0.967 at 1M; at 400,
# 0.993-1.0 at every size, where at 100k it costs about 1.5x the vector half's time for 0.001
# more. So 200 up to 100k passages (a margin below where 200 falls short), 400 above.
HNSW_EF_SEARCH_SMALL = 200
HNSW_EF_SEARCH_SMALL_ROWS = 100_000
HNSW_EF_SEARCH_LARGE = 400
# Seconds the planner's statistics (the table's rows, its common words) are reused: ANALYZE
# (autovacuum) refreshes them far less often.
STATISTICS_TTL = 300.0
# Words matching fewer passages than this share of the budget are left out of the list
# words_kept looks words up in: 32 of them (text_query's cap) add at most one budget more.
_COMMON_SHARE = 1 / 32
_statistics: dict[str, tuple[float, object]] = {}
T = TypeVar("T")


def _statistic(cursor, name: str, read: Callable[[], T]) -> T:  # noqa: ANN001
    """read(), kept in this process for STATISTICS_TTL per database."""
    key = f"{cursor.db.alias}:{cursor.db.settings_dict['NAME']}:{name}"
    cached = _statistics.get(key)
    if cached and time.monotonic() - cached[0] < STATISTICS_TTL:
        return cached[1]
    value = read()
    _statistics[key] = (time.monotonic(), value)
    return value


def passage_rows(cursor) -> float:  # noqa: ANN001
    """The passage table's rows as the planner estimates them (pg_class.reltuples: -1 until
    the table was first analyzed), read once per STATISTICS_TTL."""

    def read() -> float:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'retrieval_chunk'::regclass")
        return float(cursor.fetchone()[0])

    return _statistic(cursor, "rows", read)


def hnsw_ef_search(rows: float, candidates: int) -> int:
    """hnsw.ef_search for a search of `candidates` in an index of about `rows` passages:
    RETRIEVAL_HNSW_EF_SEARCH, or by the index's size when that is 0 (see HNSW_EF_SEARCH_SMALL);
    never under the candidates asked for nor over pgvector's limit."""
    ef = settings.RETRIEVAL_HNSW_EF_SEARCH
    if ef <= 0:
        ef = HNSW_EF_SEARCH_SMALL if rows <= HNSW_EF_SEARCH_SMALL_ROWS else HNSW_EF_SEARCH_LARGE
    return min(HNSW_EF_SEARCH_MAX, max(candidates, ef))


def common_words(cursor, max_matches: int) -> dict[str, float]:  # noqa: ANN001
    """Lexemes of the passages' full text that match many passages, with their estimated
    counts: from pg_stats (most_common_elems of search_vector, times the table's rows), read
    once per STATISTICS_TTL per database (reading it costs milliseconds, the search one).
    At a million passages there are thousands: they stay in this process, never sent with a
    query (quoting them into each query took longer than the full-text search itself)."""
    return _statistic(cursor, f"common:{max_matches}", lambda: _common_read(cursor, max_matches))


def _common_read(cursor, max_matches: int) -> dict[str, float]:  # noqa: ANN001
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
    return {lexeme: float(count) for lexeme, count in cursor.fetchall()}


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


# A passage as search returns it (the Passage fields, in order; see _passage), its similarity
# to the question vector %(v)s.
_COLUMNS = """c.id, c.document_id, c.version, COALESCE(NULLIF(d.title, ''), d.source_name), c.heading,
       c.text, {similarity} AS similarity, c.page"""
_ROW = _COLUMNS.format(similarity="1 - (c.embedding <=> %(v)s::vector)")


def _passage(row: tuple, **ranking: object) -> Passage:
    """A row of _COLUMNS as a Passage (ranking: score and ranks, when fused)."""
    chunk_id, document_id, version, title, heading, text, similarity, page = row[:8]
    return Passage(
        chunk_id=chunk_id,
        document_id=document_id,
        document_version=version,
        title=title,
        heading=heading,
        text=text,
        similarity=float(similarity),
        page=page,
        **ranking,
    )


# The candidates come from the HNSW index over the embedding cast to halfvec (the index's own
# expression, retrieval.models.Chunk: {dims} is EMBEDDING_DIMENSIONS); they are ranked by the
# float32 distance (the similarity), so half precision can only change which passages are
# candidates.
_VECTOR_SQL = f"""
SELECT {_ROW}
FROM retrieval_chunk c JOIN retrieval_knowledgedocument d ON d.id = c.document_id
WHERE c.version = d.served_version
ORDER BY c.embedding::halfvec({{dims}}) <=> %(v)s::halfvec({{dims}})
LIMIT %(n)s
"""

# The full-text half searches for the question's words words_kept chose (%(lexemes)s, stemmed
# as the passages were); the passages' rows are read for its top n only.
_TEXT_SQL = f"""
WITH q AS MATERIALIZED (
    SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query
    FROM unnest(%(lexemes)s::text[]) AS w(lexeme)
), txt AS MATERIALIZED (
    SELECT c.id, ts_rank(c.search_vector, q.query) AS rank
    FROM retrieval_chunk c
    JOIN retrieval_knowledgedocument d ON d.id = c.document_id
    CROSS JOIN q
    WHERE c.version = d.served_version AND c.search_vector @@ q.query
    ORDER BY rank DESC, c.id
    LIMIT %(n)s
)
SELECT {_ROW}, txt.rank
FROM txt
JOIN retrieval_chunk c ON c.id = txt.id
JOIN retrieval_knowledgedocument d ON d.id = c.document_id
"""

_STEM_SQL = "tsvector_to_array(retrieval_tsvector(%s, '', %s))"


def _text_half(cursor, *, words: str, config: str, params: dict, stemmed=None) -> list[tuple]:  # noqa: ANN001
    """The full-text half's rows on `cursor`, best first: the question's words stemmed (unless
    `stemmed` already holds them), the kept ones searched. [] when no word is left."""
    if stemmed is None:
        cursor.execute(f"SELECT {_STEM_SQL}", [config, words])
        stemmed = cursor.fetchone()[0]
    lexemes = stemmed or []
    max_matches = settings.RETRIEVAL_TEXT_MAX_MATCHES
    if lexemes and max_matches > 0:
        lexemes = words_kept(lexemes, common_words(cursor, max_matches), max_matches)
    if not lexemes:
        return []
    cursor.execute(_TEXT_SQL, {**params, "lexemes": lexemes})
    return sorted(cursor.fetchall(), key=lambda row: (-row[8], row[0]))


class _TextLane:
    """Threads that run the full-text half on their own connections while the caller's
    connection runs the vector half: the halves take about the same time at 100k passages, so
    a hybrid search waits for the slower one instead of both (p95 7.8 -> 4.2 ms,
    bench/retrieval_speed.py).

    Each thread keeps one connection of its own, outside the pool the sockets borrow from, so a
    search never waits for a connection a socket holds while that socket waits for its search.
    A connection sees only committed passages, so a caller inside a transaction, or one that
    finds every thread busy, runs both halves itself, as does any search whose thread failed.
    """

    def __init__(self, threads: int) -> None:
        self._free = threading.BoundedSemaphore(threads)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="search-text")
        self._local = threading.local()
        self._opened: list = []

    def submit(self, **kwargs: object) -> Future | None:
        """The text half started on a free thread, or None when all are busy."""
        if not self._free.acquire(blocking=False):
            return None
        try:
            future = self._executor.submit(self._run, **kwargs)
        except RuntimeError:  # shutting down
            self._free.release()
            return None
        future.add_done_callback(lambda _: self._free.release())
        return future

    def _run(self, **kwargs: object) -> list[tuple]:
        wrapper = getattr(self._local, "connection", None)
        if wrapper is None:
            default = connections[DEFAULT_DB_ALIAS]
            settings_dict = {
                **default.settings_dict,
                "OPTIONS": {
                    k: v for k, v in default.settings_dict["OPTIONS"].items() if k != "pool"
                },
                # Kept open between searches; checked only after an error (no extra trip).
                "CONN_MAX_AGE": None,
                "CONN_HEALTH_CHECKS": False,
            }
            wrapper = self._local.connection = type(default)(settings_dict, DEFAULT_DB_ALIAS)
            wrapper.inc_thread_sharing()  # close() may come from another thread
            self._opened.append(wrapper)
        # A connection that failed last time is checked and replaced (Django's own health check).
        wrapper.close_if_unusable_or_obsolete()
        try:
            with wrapper.cursor() as cursor:
                return _text_half(cursor, **kwargs)
        except Exception:
            wrapper.close()
            raise

    def close(self) -> None:
        """Close every thread's connection (e.g. before the database is dropped)."""
        for wrapper in self._opened:
            try:
                wrapper.close()
            except Exception:  # noqa: BLE001
                logger.warning("closing a search connection failed", exc_info=True)


_lane: _TextLane | None = None
_lane_lock = threading.Lock()


def text_lane() -> _TextLane | None:
    """The process's text-half threads (RETRIEVAL_TEXT_THREADS; None when 0)."""
    global _lane
    if settings.RETRIEVAL_TEXT_THREADS <= 0:
        return None
    with _lane_lock:
        if _lane is None:
            _lane = _TextLane(settings.RETRIEVAL_TEXT_THREADS)
    return _lane


def text_lane_close() -> None:
    """Close the text-half threads' connections, if any were opened (a later search opens
    them again)."""
    if _lane is not None:
        _lane.close()


def passages_rank(
    *, vector: list[float], question: str, mode: str, candidates: int, language: str = ""
) -> list[Passage]:
    """All candidates of the chosen method(s), best first by RRF (sync).

    `language` is the question's (ISO 639-1; "" when not detected: LANGUAGE_DEFAULT's
    configuration is used then): its words are stemmed as that language's documents were.
    """
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; valid: {', '.join(MODES)}")
    tsq = text_query(question)
    use_vector = mode in ("hybrid", "vector")
    use_text = mode in ("hybrid", "text") and bool(tsq)
    params = {"v": vector_literal(vector), "n": candidates}
    text = {
        "words": tsq.replace(" | ", " "),
        "config": text_search_config(language or settings.LANGUAGE_DEFAULT),
        "params": params,
    }
    # Inside the caller's transaction: in a savepoint, so a failure leaves that transaction
    # usable; both halves then run here (another connection would not see its writes).
    inside = connection.in_atomic_block
    lane = text_lane() if use_vector and use_text and not inside else None
    elsewhere = lane.submit(**text) if lane else None
    stem_here = use_text and elsewhere is None
    rows = 0.0
    if use_vector and settings.RETRIEVAL_HNSW_EF_SEARCH <= 0:
        with connection.cursor() as cursor:
            rows = passage_rows(cursor)
    first = [
        str(hnsw_ef_search(rows, candidates)),
        text["config"],
        text["words"] if stem_here else "",
    ]
    vector_sql = (
        _VECTOR_SQL.replace("{dims}", str(settings.EMBEDDING_DIMENSIONS)) if use_vector else None
    )
    with transaction.atomic() if inside else contextlib.nullcontext():
        stemmed, vector_rows = _first_trip(first, vector_sql, params, own_transaction=not inside)
        text_rows: list[tuple] = []
        if elsewhere is not None:
            try:
                text_rows = elsewhere.result()
            except Exception:  # noqa: BLE001 - this connection does it instead
                logger.warning("the text half failed on its own connection", exc_info=True)
                elsewhere = None
        if use_text and elsewhere is None:
            with connection.cursor() as cursor:
                text_rows = _text_half(cursor, **text, stemmed=stemmed if stem_here else None)
    return _fused(vector_rows, text_rows)


# Both settings last for the search's own transaction only (set_config's `true`); the same
# statement stems the question's words when this connection runs the text half. Iterative scans
# keep the HNSW index returning candidates when the served-version filter drops some (pgvector
# 0.8).
_SETTINGS_SQL = (
    "SELECT set_config('hnsw.ef_search', %s, true),"
    f" set_config('hnsw.iterative_scan', 'relaxed_order', true), {_STEM_SQL}"
)


def _first_trip(
    first: list, vector_sql: str | None, params: dict, *, own_transaction: bool
) -> tuple[list | None, list]:
    """The settings, the stems and the vector half's rows in one round trip: the statements (and,
    with own_transaction, the transaction that scopes the settings) go to the server together
    (psycopg's pipeline mode), where Django's atomic() would wait for each, and for its COMMIT,
    in turn (0.15-0.2 ms per search at 100k passages, README). Returns (stems, rows), the rows
    best first: by the float32 distance (the similarity), then id."""
    with connection.cursor() as control, connection.cursor() as head, connection.cursor() as body:
        try:
            with connection.wrap_database_errors, connection.connection.pipeline():
                if own_transaction:
                    control.execute("BEGIN")
                head.execute(_SETTINGS_SQL, first)
                if vector_sql:
                    body.execute(vector_sql, params)
                if own_transaction:
                    control.execute("COMMIT")
        except Exception:
            # A failed statement leaves our transaction open and aborted: end it, so the
            # connection goes back usable (or is found unusable, if the server went away).
            # The caller's transaction is its savepoint's to roll back.
            if own_transaction:
                with contextlib.suppress(Exception):
                    if connection.connection.info.transaction_status != TransactionStatus.IDLE:
                        control.execute("ROLLBACK")
            raise
        stemmed = head.fetchone()[2]
        rows = body.fetchall() if vector_sql else []
    return stemmed, sorted(rows, key=lambda row: (-row[6], row[0]))


def _fused(vector_rows: list[tuple], text_rows: list[tuple]) -> list[Passage]:
    """Both halves' rows (each best first) as passages ranked by RRF."""
    rrf_k = settings.RETRIEVAL_RRF_K
    ranks: dict[int, list] = {}
    for rank, row in enumerate(vector_rows, start=1):
        ranks[row[0]] = [row, rank, None]
    for rank, row in enumerate(text_rows, start=1):
        ranks.setdefault(row[0], [row, None, None])[2] = rank
    passages = [
        _passage(
            row,
            score=sum(1.0 / (rrf_k + r) for r in (vector_rank, text_rank) if r is not None),
            vector_rank=vector_rank,
            text_rank=text_rank,
        )
        for row, vector_rank, text_rank in ranks.values()
    ]
    passages.sort(key=lambda p: (-p.score, -p.similarity, p.chunk_id))
    return passages


def passages_filter(passages: list[Passage], *, k: int, min_similarity: float) -> list[Passage]:
    """Apply the relevance floor (see the module docstring) and keep the top k."""
    if not passages or max(p.similarity for p in passages) < min_similarity:
        return []
    kept = [p for p in passages if p.similarity >= min_similarity or p.text_rank is not None]
    return kept[:k]


def passages_served(chunk_ids: list[int]) -> dict[int, Passage]:
    """The passages of these chunks that search can still return (their document serves their
    version), by chunk id, with no similarity (0.0: no question asked). Sync."""
    if not chunk_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_COLUMNS.format(similarity='0.0')} FROM retrieval_chunk c"
            " JOIN retrieval_knowledgedocument d ON d.id = c.document_id"
            " WHERE c.id = ANY(%s) AND c.version = d.served_version",
            [list(chunk_ids)],
        )
        return {row[0]: _passage(row) for row in cursor.fetchall()}


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
