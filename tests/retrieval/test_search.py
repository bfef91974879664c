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


def _ranked(question: str) -> list[tuple]:
    from retrieval.embedders import get_embedder
    from retrieval.search import passages_rank

    vector = get_embedder().embed([question])[0].tolist()
    ranked = passages_rank(vector=vector, question=question, mode="hybrid", candidates=40)
    return [(p.chunk_id, p.vector_rank, p.text_rank, round(p.score, 9)) for p in ranked]


def _text_threads(monkeypatch) -> list[str]:  # noqa: ANN001
    """Names of the threads the full-text half runs on, from now on."""
    import threading

    from retrieval import search

    seen: list[str] = []
    real = search._text_half

    def watched(cursor, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(threading.current_thread().name)
        return real(cursor, **kwargs)

    monkeypatch.setattr(search, "_text_half", watched)
    return seen


QUESTIONS = ["Which bulb does the ZX-4471 lamp take?", "send items back for a refund", "UK parcels"]


def test_the_text_half_runs_on_its_own_connection_and_ranks_as_on_one(
    knowledge, monkeypatch
) -> None:  # noqa: ANN001
    from django.db import transaction

    threads = _text_threads(monkeypatch)
    together = [_ranked(q) for q in QUESTIONS]
    assert len(threads) == 3 and all(t.startswith("search-text") for t in threads)
    threads.clear()
    with transaction.atomic():  # inside a transaction both halves run on its connection
        apart = [_ranked(q) for q in QUESTIONS]
    assert len(threads) == 3 and not any(t.startswith("search-text") for t in threads)
    assert together == apart
    assert together[0][0][2] == 1  # the code's passage leads the text half, on both paths


def test_a_search_inside_a_transaction_sees_its_uncommitted_passages(knowledge) -> None:  # noqa: ANN001
    from django.db import transaction

    with transaction.atomic():
        document_ingest_text(source_name="new.md", title="New", text="# New\n\nThe QV-9 kettle.")
        found = _ranked("QV-9 kettle")
        new = KnowledgeDocument.objects.get(source_name="new.md")
        assert found[0][0] in set(new.chunks.values_list("id", flat=True))
        transaction.set_rollback(True)


def test_a_text_half_whose_connection_died_is_run_again_on_the_callers(
    knowledge, monkeypatch
) -> None:  # noqa: ANN001
    from django.db import connection

    from retrieval import search

    lane = search._TextLane(1)  # one thread, so the next search meets the dead connection
    monkeypatch.setattr(search, "_lane", lane)
    expected = _ranked(QUESTIONS[0])
    threads = _text_threads(monkeypatch)
    # The server ends the text thread's connection (a restart, an idle timeout, a DBA).
    (pid,) = [w.connection.info.backend_pid for w in lane._opened]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0]
    assert _ranked(QUESTIONS[0]) == expected
    # It failed on its own connection, then ran on the caller's; the next search gets a new one.
    assert threads[0].startswith("search-text") and not threads[1].startswith("search-text")
    threads.clear()
    assert _ranked(QUESTIONS[0]) == expected
    assert threads == [threads[0]] and threads[0].startswith("search-text")
    lane.close()


def test_a_search_that_finds_every_text_thread_busy_runs_both_halves_itself(
    knowledge, monkeypatch
) -> None:  # noqa: ANN001
    import threading

    from retrieval import search

    lane = search._TextLane(1)
    monkeypatch.setattr(search, "_lane", lane)
    release = threading.Event()
    held = lane._executor.submit(release.wait)  # the only thread is taken
    assert lane._free.acquire(blocking=False)  # as submit() would have
    threads = _text_threads(monkeypatch)
    try:
        busy = _ranked(QUESTIONS[0])
        assert threads == [threading.current_thread().name]
    finally:
        release.set()
        held.result()
        lane._free.release()
    threads.clear()
    assert _ranked(QUESTIONS[0]) == busy
    assert threads[0].startswith("search-text")
    lane.close()


def test_a_search_whose_statement_fails_leaves_its_connection_usable(knowledge) -> None:  # noqa: ANN001
    from django.db import DatabaseError, connection, transaction
    from psycopg.pq import TransactionStatus

    from retrieval.search import passages_rank

    # The vector half's statements and their transaction go to the server together; a vector
    # of the wrong size fails there, mid-transaction.
    with pytest.raises(DatabaseError, match="dimensions"):
        passages_rank(vector=[0.1] * 10, question="refund", mode="hybrid", candidates=40)
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert _ranked(QUESTIONS[1])[0][1] == 1  # the same connection searches again
    # Inside a caller's transaction the search is a savepoint: that transaction goes on.
    with transaction.atomic():
        KnowledgeDocument.objects.filter(source_name="returns.md").update(title="Returns policy")
        with pytest.raises(DatabaseError, match="dimensions"):
            passages_rank(vector=[0.1] * 10, question="refund", mode="hybrid", candidates=40)
        assert _ranked(QUESTIONS[1])[0][1] == 1
        assert KnowledgeDocument.objects.get(source_name="returns.md").title == "Returns policy"
