"""Search through the halfvec HNSW index returns what exact search returns (served versions only)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from retrieval import search
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.search import passages_rank

pytestmark = pytest.mark.django_db(transaction=True)

DIM = 384
WORDS = [f"term{i}" for i in range(300)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def corpus() -> tuple[np.random.Generator, np.ndarray, set[int]]:
    """2,000 chunks around 50 topic centres in 20 documents; every fourth document serves
    version 2 and still holds its version-1 chunks, which search must never return."""
    rng = np.random.default_rng(17)
    centres = _unit(rng.normal(size=(50, DIM)))
    docs = [
        KnowledgeDocument.objects.create(
            title=f"Doc {i}",
            source_name=f"scale/{i}.md",
            status=KnowledgeDocument.Status.READY,
            version=2 if i % 4 == 0 else 1,
            served_version=2 if i % 4 == 0 else 1,
        )
        for i in range(20)
    ]
    chunks = []
    for n in range(2000):
        doc = docs[n % len(docs)]
        ordinal = n // len(docs)
        version = 1 if doc.version == 2 and ordinal % 2 == 0 else doc.version
        topic = rng.integers(len(centres))
        vector = _unit(centres[topic] + rng.normal(scale=0.03, size=DIM))
        # "everywhere" is in every passage, "zq4471" (a product code) in three.
        words = ["everywhere", *(WORDS[w] for w in rng.integers(len(WORDS), size=12))]
        text = " ".join(words + (["zq4471"] if n in (3, 700, 1401) else []))
        chunks.append(
            Chunk(
                document=doc,
                version=version,
                ordinal=ordinal,
                text=text,
                content_hash="x",
                embedding=vector.tolist(),
            )
        )
    Chunk.objects.bulk_create(chunks)
    stale = {c.id for c in Chunk.objects.filter(document__served_version=2, version=1)}
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE retrieval_chunk")
        cursor.execute("ANALYZE retrieval_knowledgedocument")
    return rng, centres, stale


def _hnsw_scans() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'chunk_embedding_hnsw'"
        )
        return cursor.fetchone()[0]


def _top10(vector: list[float], question: str, mode: str, *, index: bool) -> list[int]:
    with transaction.atomic(), connection.cursor() as cursor:
        # On 2,000 rows the planner would rather sort them all; the index is made the only
        # way on one side and forbidden on the other, so both are really compared.
        cursor.execute(f"SET LOCAL enable_{'seqscan' if index else 'indexscan'} = off")
        ranked = passages_rank(vector=vector, question=question, mode=mode, candidates=40)
    return [p.chunk_id for p in ranked[:10]]


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_index_search_equals_exact_search(corpus, mode: str) -> None:  # noqa: ANN001
    rng, centres, stale = corpus
    queries = _unit(centres[:20] + rng.normal(scale=0.03, size=(20, DIM)))
    before = _hnsw_scans()
    for i, query in enumerate(queries):
        question = f"{WORDS[i]} {WORDS[i + 7]} {WORDS[i * 3]}"
        exact = _top10(query.tolist(), question, mode, index=False)
        found = _top10(query.tolist(), question, mode, index=True)
        assert len(exact) == 10 and found == exact
        assert not set(found) & stale
    # The query reached the index (its expression matches the index's), once per search.
    assert _hnsw_scans() - before == len(queries)


def test_full_text_drops_a_word_too_common_to_rank_cheaply(corpus, settings) -> None:  # noqa: ANN001
    _, centres, stale = corpus
    search._statistics.clear()  # statistics read by an earlier test of this database
    vector = centres[0].tolist()
    rare = set(Chunk.objects.filter(text__contains="zq4471").values_list("id", flat=True))
    settings.RETRIEVAL_TEXT_MAX_MATCHES = 500
    ranked = passages_rank(vector=vector, question="everywhere zq4471", mode="text", candidates=40)
    # 2,000 passages hold "everywhere": over the budget, it is dropped; the code is kept.
    assert {p.chunk_id for p in ranked} == rare - stale and len(rare - stale) >= 2
    settings.RETRIEVAL_TEXT_MAX_MATCHES = 0  # every word kept
    ranked = passages_rank(vector=vector, question="everywhere zq4471", mode="text", candidates=40)
    assert len(ranked) == 40 and rare - stale <= {p.chunk_id for p in ranked}
    # A question of only common words still searches by vector.
    settings.RETRIEVAL_TEXT_MAX_MATCHES = 500
    search._statistics.clear()
    ranked = passages_rank(vector=vector, question="everywhere", mode="hybrid", candidates=40)
    assert len(ranked) == 40 and all(p.text_rank is None for p in ranked)


def test_an_ef_search_above_pgvectors_limit_still_searches(settings) -> None:  # noqa: ANN001
    settings.RETRIEVAL_HNSW_EF_SEARCH = 5000  # pgvector accepts 1..1000
    ranked = passages_rank(vector=[0.05] * DIM, question="anything", mode="hybrid", candidates=40)
    assert ranked == []


def test_ef_search_by_default_widens_with_the_index_size(settings) -> None:  # noqa: ANN001
    """At the default (0) hnsw.ef_search follows the passage table's size as the planner knows it:
    200 up to 100k passages, 400 above, never under the candidates asked for nor over
    pgvector's 1,000."""
    settings.RETRIEVAL_HNSW_EF_SEARCH = 0
    used = {}
    for rows, candidates in [
        (-1, 40), (2_000, 40), (100_000, 40), (100_001, 40), (1_000_000, 40),
        (2_000, 300), (1_000_000, 2000),
    ]:  # fmt: skip
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE pg_class SET reltuples = %s WHERE oid = 'retrieval_chunk'::regclass",
                    [rows],
                )
            search._statistics.clear()  # the table's size as read by an earlier search
            # Inside a transaction both halves run on this connection, and the search's
            # transaction-local settings last until this transaction ends.
            passages_rank(
                vector=[0.05] * DIM, question="anything", mode="hybrid", candidates=candidates
            )
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('hnsw.ef_search')::int")
                used[rows, candidates] = cursor.fetchone()[0]
            transaction.set_rollback(True)
    assert used == {
        (-1, 40): 200,
        (2_000, 40): 200,
        (100_000, 40): 200,
        (100_001, 40): 400,
        (1_000_000, 40): 400,
        (2_000, 300): 300,
        (1_000_000, 2000): 1000,
    }
    settings.RETRIEVAL_HNSW_EF_SEARCH = 250  # a fixed value is taken as it is
    with transaction.atomic():
        passages_rank(vector=[0.05] * DIM, question="anything", mode="hybrid", candidates=40)
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('hnsw.ef_search')::int")
            assert cursor.fetchone()[0] == 250
        transaction.set_rollback(True)
