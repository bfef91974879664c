"""The scorer's signals, score range and fitting; SQuAD grading and per-question replay."""

from __future__ import annotations

import pytest

from routing.evaluation import Row, answer_grade, policy_summary, replay_question, token_f1
from routing.scorer import (
    DEFAULT_WEIGHTS,
    ScoringInput,
    auc,
    says_dont_know,
    score_signals,
    scorer_fit,
    signals_extract,
)

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
    for text in ("I don't know.", "The passages do not contain that.", "", "Not mentioned."):
        assert says_dont_know(text), text
    assert not says_dont_know("3 to 5 working days [1]")
    idk = signals_extract(item("I don't know."))
    assert idk["idk"] == 1.0
    assert score_signals(idk) < score_signals(signals_extract(item("3 to 5 working days [1]")))


def test_fit_learns_which_signal_separates_right_from_wrong() -> None:
    signals = [dict(support=s, top_similarity=0.5) for s in (0.9, 0.8, 0.95, 0.1, 0.2, 0.05)]
    labels = [True, True, True, False, False, False]
    report = scorer_fit(signals=signals, labels=labels, l2=0.1)
    assert report.weights["support"] > 0
    assert report.auc == 1.0 and report.rows == 6 and report.positives == 3
    assert set(report.weights) == set(DEFAULT_WEIGHTS)
    with pytest.raises(ValueError):
        scorer_fit(signals=signals[:3], labels=labels[:3])
    assert auc([0.9, 0.1], [True, False]) == 1.0


def test_squad_grading() -> None:
    assert token_f1("The Turing machine [1]", ["a Turing machine"]) == 1.0
    assert token_f1("France", ["Germany"]) == 0.0
    right = answer_grade(answer="I don't know", abstained=True, answerable=False, gold=[])
    assert right.grade == 1.0 and right.correct_abstention is True
    wrong = answer_grade(answer="Rollo", abstained=False, answerable=False, gold=[])
    assert wrong.grade == 0.0 and wrong.correct_abstention is False
    missed = answer_grade(answer="", abstained=True, answerable=True, gold=["Rollo"])
    assert missed.grade == 0.0 and missed.f1 == 0.0


def _row(
    qid: str, answerable: bool, top: float, medium: tuple, large: tuple, source: str = "squad"
) -> Row:
    def data(t: tuple) -> dict:
        return {"score": t[0], "f1": t[1], "cost": t[2], "latency_ms": 10.0, "abstained": False}

    return Row(qid, source, answerable, "test", {"medium": data(medium), "large": data(large)}, top)


def test_replay_floor_escalation_and_summary() -> None:
    rows = [
        _row("a", True, 0.7, (0.9, 1.0, 1.0), (0.9, 1.0, 3.0)),  # medium accepted
        _row("b", True, 0.7, (0.2, 0.0, 1.0), (0.8, 1.0, 3.0)),  # escalates, large right
        _row("c", False, 0.6, (0.3, 0.0, 1.0), (0.3, 0.0, 3.0)),  # large low: abstains
        _row("d", False, 0.1, (0.9, 0.0, 1.0), (0.9, 0.0, 3.0), source="off_topic"),  # floor
    ]
    outcome = replay_question(rows[1], tiers=["medium", "large"], thresholds=[0.5, 0.5])
    assert (outcome.tier, outcome.cost, outcome.attempts) == ("large", 4.0, 2)
    floored = replay_question(rows[3], tiers=["medium", "large"], thresholds=[0.5, 0.5], floor=0.3)
    assert floored.abstained and floored.cost == 0.0
    figures = policy_summary(rows, tiers=["medium", "large"], thresholds=[0.5, 0.5], floor=0.3)
    assert figures["answerable_f1"] == 1.0
    assert figures["abstain_unanswerable"] == 1.0 and figures["abstain_off_topic"] == 1.0
    assert figures["false_abstention"] == 0.0
    assert figures["mean_cost"] == pytest.approx((1 + 4 + 4 + 0) / 4)
