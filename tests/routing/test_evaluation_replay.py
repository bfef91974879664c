"""routing.evaluation.replay and .search: the one replay (live decisions) and the one search."""

from __future__ import annotations

import pytest

from routing.evaluation.replay import (
    Policy,
    QuestionRow,
    TierRow,
    policy_summary,
    question_replay,
)
from routing.evaluation.search import Goal, policies_search


def tier(score: float, f1: float, cost: float, **extra: object) -> TierRow:
    return TierRow(signals={}, score=score, f1=f1, call_cost=cost, latency_ms=10.0, **extra)  # type: ignore[arg-type]


def row(
    qid: str,
    medium: TierRow,
    large: TierRow,
    *,
    answerable: bool = True,
    source: str = "squad",
    top: float = 0.7,
) -> QuestionRow:
    return QuestionRow(qid, source, answerable, "test", top, {"medium": medium, "large": large})


TWO = Policy(tiers=("medium", "large"), thresholds=(0.5, 0.5), floor=0.3)


def test_floor_declines_before_any_model_at_no_cost() -> None:
    question = row("d", tier(0.9, 0.0, 1.0), tier(0.9, 0.0, 3.0), source="off_topic", top=0.1)
    outcome = question_replay(row=question, policy=TWO)
    assert (outcome.abstained, outcome.cost, outcome.tier, outcome.attempts) == (True, 0.0, None, 0)
    assert outcome.reason == "no_passages"
    # Below the floor only: at a lower floor the same question is answered.
    low = Policy(tiers=TWO.tiers, thresholds=TWO.thresholds, floor=0.05)
    assert question_replay(row=question, policy=low).tier == "medium"


def test_a_failed_tier_falls_through_at_its_call_cost() -> None:
    # medium failed (its stored score is 0 and would be accepted at threshold 0 if replayed
    # as an answer): the live cascade falls through to large.
    failed = tier(0.0, 0.0, 0.4, error="http_500")
    outcome = question_replay(
        row=row("e", failed, tier(0.8, 1.0, 3.0)),
        policy=Policy(tiers=("medium", "large"), thresholds=(0.0, 0.0)),
    )
    assert (outcome.tier, outcome.cost, outcome.attempts, outcome.f1) == ("large", 3.4, 2, 1.0)
    # Every tier failed: an error, not an abstention.
    both = question_replay(row=row("f", failed, tier(0.0, 0.0, 0.0, error="timeout")), policy=TWO)
    assert both.error and not both.abstained and both.tier is None
    # A tier scored, the last failed: the live cascade declines ("no_answer").
    last = question_replay(
        row=row("g", tier(0.2, 0.0, 1.0), tier(0.0, 0.0, 0.0, error="timeout")), policy=TWO
    )
    assert last.abstained and not last.error and last.reason == "no_answer"


def test_dont_know_escalates_and_abstains_on_the_last_tier() -> None:
    outcome = question_replay(
        row=row(
            "h", tier(0.9, 0.0, 1.0, said_dont_know=True), tier(0.9, 0.0, 3.0, said_dont_know=True)
        ),
        policy=TWO,
    )
    assert outcome.abstained and outcome.reason == "dont_know" and outcome.cost == 4.0


def test_the_support_check_is_paid_only_where_the_threshold_is_above_zero() -> None:
    checked = row("c", tier(0.2, 0.0, 1.0, check_cost=0.1), tier(0.9, 1.0, 3.0, check_cost=0.3))
    raised = question_replay(
        row=checked, policy=Policy(tiers=("medium", "large"), thresholds=(0.5, 0.0))
    )
    assert raised.cost == pytest.approx(1.1 + 3.0)
    both = question_replay(
        row=checked, policy=Policy(tiers=("medium", "large"), thresholds=(0.5, 0.5))
    )
    assert both.cost == pytest.approx(1.1 + 3.3)
    off = question_replay(
        row=checked,
        policy=Policy(tiers=("medium", "large"), thresholds=(0.5, 0.5), support_check=False),
    )
    assert off.cost == pytest.approx(4.0)


def test_scores_are_recomputed_with_the_policy_weights() -> None:
    signals = {"support": 1.0}
    question = QuestionRow(
        "w",
        "squad",
        True,
        "test",
        0.7,
        {
            "medium": TierRow(signals=signals, score=0.0, f1=1.0, call_cost=1.0),
            "large": TierRow(signals=signals, score=0.0, f1=1.0, call_cost=3.0),
        },
    )
    stored = question_replay(row=question, policy=TWO)
    assert stored.tier is None  # stored scores 0: both tiers refuse
    confident = Policy(
        tiers=TWO.tiers, thresholds=TWO.thresholds, weights={"bias": 0.0, "support": 5.0}
    )
    assert question_replay(row=question, policy=confident).tier == "medium"


ROWS = [
    row("a", tier(0.9, 1.0, 1.0), tier(0.9, 1.0, 3.0)),  # medium accepted
    row("b", tier(0.2, 0.0, 1.0), tier(0.8, 1.0, 3.0)),  # escalates, large right
    row("c", tier(0.3, 0.0, 1.0), tier(0.3, 0.0, 3.0), answerable=False),  # near miss declined
    row("n", tier(0.9, 0.0, 1.0), tier(0.9, 0.0, 3.0), answerable=False),  # near miss answered
    row(
        "d", tier(0.9, 0.0, 1.0), tier(0.9, 0.0, 3.0), answerable=False, source="off_topic", top=0.1
    ),
]


def test_summary_keeps_near_misses_and_off_topic_apart() -> None:
    figures = policy_summary(rows=ROWS, policy=TWO)
    assert figures.answerable_f1 == 1.0 and figures.false_abstention == 0.0
    assert figures.near_miss_abstention == 0.5  # c declined, n answered
    assert figures.off_topic_abstention == 1.0  # d below the floor
    assert figures.mean_cost == pytest.approx((1 + 4 + 4 + 1 + 0) / 5)
    assert figures.tier_shares == {"medium": 0.4, "large": 0.2}
    assert figures.escalation_rate == pytest.approx(2 / 5)


def test_search_respects_the_cost_and_f1_bounds_against_the_largest_tier() -> None:
    result = policies_search(
        rows=ROWS, tier_order=["medium", "large"], goal=Goal(), floors=(0.3,), reference_floor=0.3
    )
    assert result.reference.policy.tiers == ("large",)
    chosen = result.chosen
    assert chosen is not None
    assert chosen.mean_cost <= 0.70 * result.reference.mean_cost
    assert chosen.answerable_f1 == 1.0 and chosen.policy.tiers == ("medium", "large")
    # Tighter than any policy can be: no choice rather than a bad one.
    none = policies_search(rows=ROWS, tier_order=["medium", "large"], goal=Goal(budget=0.1))
    assert none.chosen is None
    cheapest = policies_search(
        rows=ROWS,
        tier_order=["medium", "large"],
        goal=Goal(max_cost_ratio=None, max_f1_loss=None, target_f1=0.5),
    )
    assert cheapest.chosen is not None and cheapest.chosen.policy.tiers == ("medium",)
    costs = [p.mean_cost for p in result.frontier]
    assert costs == sorted(costs)


def test_the_rerank_floor_declines_on_cross_encoder_relevance_only_when_reranked() -> None:
    medium, large = tier(0.9, 1.0, 1.0), tier(0.9, 1.0, 3.0)
    reranked = QuestionRow(
        "r", "off_topic", False, "test", 0.7, {"medium": medium, "large": large}, 0.004
    )
    plain = QuestionRow("p", "off_topic", False, "test", 0.7, {"medium": medium, "large": large})
    gate = Policy(tiers=TWO.tiers, thresholds=TWO.thresholds, floor=0.3, rerank_floor=0.01)
    outcome = question_replay(row=reranked, policy=gate)
    assert (outcome.abstained, outcome.cost, outcome.reason) == (True, 0.0, "no_passages")
    # Not reranked: the cosine floor alone decides, as live.
    assert question_replay(row=plain, policy=gate).tier == "medium"
    assert "relevance ≥ 0.01" in gate.describe() and gate.as_dict()["rerank_floor"] == 0.01


def test_a_passage_checked_once_is_paid_once_across_tiers() -> None:
    # Both tiers low, both cite the same passage: live asks the check once per answer.
    medium = tier(0.1, 0.0, 1.0, check_cost=0.5, check_key="abc")
    large = tier(0.1, 0.0, 3.0, check_cost=0.5, check_key="abc")
    policy = Policy(tiers=("medium", "large"), thresholds=(0.5, 0.5))
    assert question_replay(row=row("c", medium, large), policy=policy).cost == pytest.approx(4.5)
    other = tier(0.1, 0.0, 3.0, check_cost=0.5, check_key="xyz")
    assert question_replay(row=row("c", medium, other), policy=policy).cost == pytest.approx(5.0)


def test_the_search_tries_rerank_floors_on_reranked_rows() -> None:
    from routing.evaluation.search import rerank_floors_to_try

    rows = [
        QuestionRow(
            "a",
            "squad",
            True,
            "fit",
            0.7,
            {"medium": tier(0.9, 1.0, 1.0), "large": tier(0.9, 1.0, 3.0)},
            0.9,
        ),
        QuestionRow(
            "o",
            "off_topic",
            False,
            "fit",
            0.7,
            {"medium": tier(0.9, 0.0, 1.0), "large": tier(0.9, 0.0, 3.0)},
            0.0001,
        ),
    ]
    floors = rerank_floors_to_try(rows=rows, collected=0.0)
    assert floors[0] == 0.0 and len(floors) > 1
    result = policies_search(
        rows=rows, tier_order=["medium", "large"], goal=Goal(), rerank_floors=floors
    )
    # Declining the off-topic question before any model is free and loses no F1: chosen.
    assert result.chosen is not None and result.chosen.policy.rerank_floor > 0.0001
    assert result.chosen.off_topic_abstention == 1.0 and result.chosen.answerable_f1 == 1.0
    assert rerank_floors_to_try(
        rows=[row("n", tier(0.9, 1, 1), tier(0.9, 1, 3))], collected=0.0
    ) == [0.0]
