"""A changed document retires the cached answers that cited it, and only those, without reading
every entry of a large cache (each ingested, replaced or deleted document runs this)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from retrieval.cache import cache_invalidate_document
from retrieval.models import CacheEntry

pytestmark = pytest.mark.django_db

ENTRIES = 1000
CITED = 4242  # a document id only the entries below cite


def _entries_insert(count: int) -> None:
    """count active entries, each citing two documents other than CITED, with random vectors."""
    table = CacheEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (question, embedding, answer, sources, document_versions, tier, "
            "cost, active, retired_reason, hit_count, version, producers, created_at) "
            "SELECT 'question ' || i, (SELECT array_agg(random() - 0.5) "
            "FROM generate_series(1, %s) WHERE i > 0)::vector, 'answer', '[]', "
            "jsonb_build_object((i %% 300)::text, 1, (300 + i %% 200)::text, 2), "
            "'medium', 0, true, '', 0, 0, '[]', now() FROM generate_series(1, %s) i",
            [CacheEntry._meta.get_field("embedding").dimensions, count],
        )


def _entry(question: str, versions: dict, *, active: bool = True) -> CacheEntry:
    return CacheEntry.objects.create(
        question=question,
        embedding=[0.1] * CacheEntry._meta.get_field("embedding").dimensions,
        answer="An answer.",
        document_versions=versions,
        tier="medium",
        active=active,
    )


def test_a_changed_document_retires_only_the_entries_citing_it_through_an_index() -> None:
    _entries_insert(ENTRIES)
    citing = [
        _entry("Do you ship to Canada?", {str(CITED): 3}),
        _entry("How long do refunds take?", {"7": 1, str(CITED): 3}),
    ]
    retired = _entry("An old answer", {str(CITED): 2}, active=False)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {CacheEntry._meta.db_table}")

    with CaptureQueriesContext(connection) as queries:
        assert cache_invalidate_document(document_id=CITED) == 2

    assert set(CacheEntry.objects.filter(active=False).values_list("id", flat=True)) == {
        retired.id,
        *(e.id for e in citing),
    }
    assert set(
        CacheEntry.objects.filter(id__in=[e.id for e in citing]).values_list(
            "retired_reason", flat=True
        )
    ) == {"document_changed"}
    assert CacheEntry.objects.filter(active=True).count() == ENTRIES
    # The statement it sent reads the entries that cite the document from an index, not the
    # whole table (a sequential scan took about 10 ms per document at 50,000 entries).
    (update,) = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {update}")
        plan = json.dumps(cursor.fetchone()[0])
    assert "cache_document_versions_gin" in plan, plan
    assert "Seq Scan" not in plan, plan
