"""The cross-encoder reranker with its real bundled model (no database, no network)."""

from __future__ import annotations

import pytest

from retrieval.rerank import (
    apassages_rerank,
    get_reranker,
    passages_rerank,
    passages_search_reranked,
)
from retrieval.search import Passage
from retrieval.services import document_ingest_text

# (question, the passage that answers it, a passage on the same topic that does not)
PAIRS = [
    (
        "How long does delivery to the UK take?",
        "Parcels to the United Kingdom arrive within two to three working days after dispatch.",
        "We ship to the United Kingdom with a tracked courier and send you the tracking link.",
    ),
    (
        "Can I return a lamp I bought on sale?",
        "Sale items, lamps included, can be returned within 30 days for a full refund.",
        "Our lamps use energy-saving LED bulbs and come with a two-year warranty.",
    ),
    (
        "In what country is Normandy located?",
        "The Normans gave their name to Normandy, a region in France.",
        "The Normans were famed for their martial spirit and their Catholic piety.",
    ),
    (
        "What is the reset code for the ZX-4471 router?",
        "To reset the ZX-4471 router, hold the button for ten seconds and enter code 0000.",
        "The ZX-4471 router supports Wi-Fi 6 and has four Ethernet ports.",
    ),
]


def passage(chunk_id: int, text: str) -> Passage:
    return Passage(
        chunk_id=chunk_id,
        document_id=chunk_id,
        document_version=1,
        title="Help",
        heading="",
        text=text,
        similarity=0.5,
        score=1.0 / chunk_id,
    )


@pytest.mark.parametrize(("question", "gold", "other"), PAIRS)
def test_the_answering_passage_outranks_a_same_topic_one(
    question: str, gold: str, other: str
) -> None:
    # The unrelated passage comes first in the fused order: reranking must move the gold up.
    reranked = passages_rerank(
        question=question, passages=[passage(1, other), passage(2, gold)], keep=2
    )
    assert [p.text for p in reranked] == [gold, other]
    assert reranked[0].rerank_score > reranked[1].rerank_score
    assert reranked[0].chunk_id == 2 and reranked[0].score == 0.5  # the rest is untouched


def test_keep_cuts_the_list_and_scores_are_stable() -> None:
    question = PAIRS[0][0]
    candidates = [
        passage(i + 1, text) for i, (_, gold, other) in enumerate(PAIRS) for text in (gold, other)
    ]
    first = passages_rerank(question=question, passages=candidates, keep=3)
    second = passages_rerank(question=question, passages=candidates, keep=3)
    assert len(first) == 3 and first[0].text == PAIRS[0][1]
    assert first == second
    assert [p.rerank_score for p in first] == sorted((p.rerank_score for p in first), reverse=True)
    # A pair's score barely depends on the rest of its batch (INT8 dynamic quantisation).
    alone = get_reranker().scores(question, [PAIRS[0][1]])
    assert alone[0] == pytest.approx(first[0].rerank_score, abs=0.5)


def test_empty_input_gives_nothing() -> None:
    assert passages_rerank(question="Anything?", passages=[], keep=4) == []
    assert get_reranker().scores("Anything?", []) == []


def test_a_passage_longer_than_the_model_window_is_truncated() -> None:
    question, gold, other = PAIRS[1]
    long_gold = gold + " " + " ".join(["Refunds reach your card within five days."] * 400)
    reranked = passages_rerank(
        question=question, passages=[passage(1, other), passage(2, long_gold)], keep=2
    )
    assert reranked[0].text == long_gold


async def test_async_reranking_matches_sync() -> None:
    question, gold, other = PAIRS[2]
    candidates = [passage(1, other), passage(2, gold)]
    expected = passages_rerank(question=question, passages=candidates, keep=2)
    assert await apassages_rerank(question=question, passages=candidates, keep=2) == expected


@pytest.mark.django_db(transaction=True)
async def test_search_reranks_more_candidates_and_keeps_k(settings) -> None:  # noqa: ANN001
    from asgiref.sync import sync_to_async

    for i, (_, gold, other) in enumerate(PAIRS):
        for j, text in enumerate((gold, other)):
            await sync_to_async(document_ingest_text)(
                source_name=f"doc{i}-{j}.md", title=f"Doc {i}-{j}", text=text
            )
    question = PAIRS[3][0]
    settings.RETRIEVAL_RERANK = False
    plain = await passages_search_reranked(question=question, k=1, min_similarity=0.0)
    assert len(plain) == 1 and plain[0].rerank_score is None
    settings.RETRIEVAL_RERANK = True
    settings.RETRIEVAL_RERANK_CANDIDATES = 8
    reranked = await passages_search_reranked(question=question, k=2, min_similarity=0.0)
    assert [p.text for p in reranked] == [PAIRS[3][1], PAIRS[3][2]]
    assert all(p.rerank_score is not None for p in reranked)
