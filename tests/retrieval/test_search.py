"""Hybrid search: vector and full-text ranks fused, a cosine floor, READY documents only."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from retrieval.models import KnowledgeDocument
from retrieval.search import passages_search, text_query, words_kept
from retrieval.services import document_ingest_text

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {
    "returns.md": "# Returns\n\n## Window\n\nYou can send items back within 30 days of delivery for a full refund.",
    "shipping.md": "# Shipping\n\n## Times\n\nParcels within the UK arrive in two to three working days.",
    "lamps.md": "# Lamps\n\n## Bulbs\n\nThe Orla desk lamp takes a ZX-4471 bulb, sold separately.",
}


@pytest.fixture
def knowledge() -> dict[str, KnowledgeDocument]:
    """Three small documents, indexed with the real MiniLM embedder."""
    return {
        name: document_ingest_text(source_name=name, title=name[:-3].title(), text=text)
        for name, text in DOCS.items()
    }


def test_the_text_half_keeps_the_rarest_words_within_the_budget() -> None:
    common = {"ship": 600.0, "order": 300.0, "item": 300.0}
    # Rarest first (unlisted words match few passages and are always kept), then the listed
    # ones while their passages add up to at most the budget; ties by the word.
    assert words_kept(["ship", "zx4471", "order", "item"], common, 1000) == [
        "zx4471",
        "item",
        "order",
    ]
    assert words_kept(["ship", "order"], common, 900) == ["order", "ship"]
    assert words_kept(["ship"], common, 500) == []
    assert words_kept(["ship", "order"], common, 0) == ["ship", "order"]  # no budget


def test_text_query_is_an_or_of_words() -> None:
    assert text_query("Can I return a lamp?") == "can | return | lamp"
    assert text_query("?!") == ""


async def test_hybrid_finds_the_semantic_match_first(knowledge) -> None:  # noqa: ANN001
    passages = await passages_search(
        question="How long do I have to send something back?", k=3, min_similarity=0.2
    )
    assert passages[0].title == "Returns"
    assert passages[0].vector_rank == 1 and 0.2 <= passages[0].similarity <= 1.0


async def test_full_text_finds_an_exact_code_the_embedding_misses(knowledge) -> None:  # noqa: ANN001
    text_only = await passages_search(question="ZX-4471", k=3, min_similarity=0.0, mode="text")
    assert [p.title for p in text_only] == ["Lamps"] and text_only[0].text_rank == 1
    hybrid = await passages_search(question="ZX-4471", k=3, min_similarity=0.0)
    assert hybrid[0].title == "Lamps"
    # in both lists beats in one: its fused score is the highest
    assert hybrid[0].text_rank == 1 and hybrid[0].score == max(p.score for p in hybrid)


async def test_floor_returns_nothing_for_an_unrelated_question(knowledge) -> None:  # noqa: ANN001
    passages = await passages_search(
        question="Who won the 1998 football world cup final?", k=3, min_similarity=0.3
    )
    assert passages == []


async def test_only_served_versions_are_served(knowledge) -> None:  # noqa: ANN001
    # A first version being indexed has no served version yet (a replacement being indexed
    # keeps serving the old one: tests/retrieval/test_versions.py).
    await KnowledgeDocument.objects.filter(source_name="returns.md").aupdate(
        status=KnowledgeDocument.Status.EMBEDDING, served_version=None
    )
    passages = await passages_search(
        question="How long do I have to send something back?", k=3, min_similarity=0.0
    )
    assert passages and all(p.title != "Returns" for p in passages)


async def test_passage_fields_match_the_document(knowledge) -> None:  # noqa: ANN001
    passages = await passages_search(question="UK parcel delivery time", k=1, min_similarity=0.2)
    document = await sync_to_async(lambda: knowledge["shipping.md"])()
    assert len(passages) == 1
    assert passages[0].document_id == document.id
    assert passages[0].document_version == document.version
    assert passages[0].heading == "Times"


async def test_a_given_vector_is_used_without_embedding_again(knowledge, monkeypatch) -> None:  # noqa: ANN001
    from retrieval import search
    from retrieval.embedders import get_embedder

    question = "How long do I have to send something back?"
    vector = (await get_embedder().aembed([question]))[0].tolist()
    expected = await passages_search(question=question, k=3, min_similarity=0.2)

    def no_embedding():  # noqa: ANN202
        raise AssertionError("the question was embedded a second time")

    monkeypatch.setattr(search, "get_embedder", no_embedding)
    reused = await passages_search(question=question, k=3, min_similarity=0.2, vector=vector)
    assert [(p.chunk_id, p.similarity) for p in reused] == [
        (p.chunk_id, p.similarity) for p in expected
    ]
