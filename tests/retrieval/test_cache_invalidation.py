"""A changed document retires the cached answers that cited it, and only those, without reading
every entry of a large cache (each ingested, replaced or deleted document runs this); a new
version keeps the answers whose passages it left unchanged."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from retrieval.cache import cache_invalidate_document
from retrieval.models import CacheEntry, Chunk
from retrieval.services import document_ingest_text

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


GUIDE = (
    "# Guide\n\n## Returns\n\nReturns are free within 30 days.\n\n"
    "## Delivery\n\nDelivery takes 3 days.\n\n## Repairs\n\nRepairs take two weeks."
)


def _cached(question: str, sources: list[dict]) -> CacheEntry:
    return CacheEntry.objects.create(
        question=question,
        embedding=[0.1] * settings.EMBEDDING_DIMENSIONS,
        answer="As the guide says [1].",
        sources=sources,
        document_versions={str(s["document_id"]): s["document_version"] for s in sources},
        shared_at="2026-01-01T00:00:00Z",
    )


def _source(chunk: Chunk, n: int = 1, url: str | None = None) -> dict:
    return {
        "n": n,
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "document_version": chunk.version,
        "title": "Guide",
        "heading": chunk.heading,
        "page": None,
        "similarity": 0.8,
        "url": url or f"/passages/{chunk.id}/",
    }


def test_a_new_version_keeps_only_the_entries_whose_passages_it_left_unchanged(
    django_capture_on_commit_callbacks,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    settings.CHUNK_TOKENS = 40
    settings.CHUNK_OVERLAP_TOKENS = 0
    with django_capture_on_commit_callbacks(execute=True):
        guide = document_ingest_text(source_name="guide.md", title="Guide", text=GUIDE)
        other = document_ingest_text(
            source_name="other.md", title="Other", text="# Other\n\nGift cards last a year."
        )
    old = {c.heading: c for c in guide.chunks.all()}
    gift = other.chunks.get()
    returns = _cached("Can I return things?", [_source(old["Returns"])])
    both = _cached("Returns and delivery?", [_source(old["Returns"]), _source(old["Delivery"], 2)])
    page = "https://shop.example/help/repairs"
    mixed = _cached(
        "Repairs and gift cards?",
        [_source(old["Repairs"], url=page), {**_source(gift, 2), "title": "Other"}],
    )
    with django_capture_on_commit_callbacks(execute=True):
        document_ingest_text(
            source_name="guide.md", title="Guide", text=GUIDE.replace("3 days", "5 days")
        )
    new = {c.heading: c for c in Chunk.objects.filter(document=guide, version=2)}
    assert not Chunk.objects.filter(document=guide, version=1).exists()
    returns.refresh_from_db()
    assert returns.active and returns.document_versions == {str(guide.id): 2}
    assert returns.sources == [
        {
            **_source(old["Returns"]),
            "chunk_id": new["Returns"].id,
            "document_version": 2,
            "url": f"/passages/{new['Returns'].id}/",
        }
    ]
    # One of the passages it was shown changed: retired.
    both.refresh_from_db()
    assert not both.active and both.retired_reason == "document_changed"
    # A web page's citation keeps its address; another document's source is left as it was.
    mixed.refresh_from_db()
    assert mixed.active
    assert mixed.document_versions == {str(guide.id): 2, str(other.id): 1}
    assert mixed.sources[0]["chunk_id"] == new["Repairs"].id and mixed.sources[0]["url"] == page
    assert mixed.sources[1] == {**_source(gift, 2), "title": "Other"}
