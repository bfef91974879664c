"""The scorer's runtime: signals and score range (fitting and grading: tests/routing/test_evaluation_*)."""

from __future__ import annotations

import pytest

from routing.scorer import ScoringInput, says_dont_know, score_signals, signals_extract

PASSAGE = "Standard delivery takes 3 to 5 working days. Express delivery costs 6 euros."


def item(answer: str, logprob: float = -0.1, similarity: float = 0.7, first_i: float = -5.0):  # noqa: ANN201
    return ScoringInput(
        question="How long does standard delivery take?",
        answer=answer,
        token_logprobs=[logprob] * 6,
        first_top_logprobs={"Standard": -0.1, "I": first_i},
        passage_texts=[PASSAGE],
        passage_similarities=[similarity],
    )


def test_supported_confident_answer_outscores_an_unsupported_hesitant_one() -> None:
    good = signals_extract(item("Standard delivery takes 3 to 5 working days [1]"))
    bad = signals_extract(item("Usually a fortnight by pigeon", logprob=-2.5, first_i=-0.3))
    assert good["support"] == 1.0 and bad["support"] == 0.0
    assert good["cited_similarity"] == pytest.approx(0.7)
    assert bad["p_first_i"] > 0.7
    assert 0.0 <= score_signals(bad) < score_signals(good) <= 1.0


def test_dont_know_is_recognised_and_scored_down() -> None:
    for text in ("I don't know.", "The passages do not contain that.", ""):
        assert says_dont_know(text), text
    assert not says_dont_know("3 to 5 working days [1]")
    idk = signals_extract(item("I don't know."))
    assert idk["idk"] == 1.0
    assert score_signals(idk) < score_signals(signals_extract(item("3 to 5 working days [1]")))
