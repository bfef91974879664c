"""The cascade optimiser against a small run whose figures were worked out by hand."""

from __future__ import annotations

import pytest

from routing.tuning import (
    QuestionRow,
    TierOutcome,
    best_under_budget,
    cheapest_above_target,
    pareto_frontier,
    policies_search,
    policy_replay,
    single_tier_points,
    with_min_abstention,
)


def _row(qid: str, answerable: bool, a: tuple, b: tuple) -> QuestionRow:
    return QuestionRow(
        question_id=qid,
        answerable=answerable,
        outcomes={
            "cheap": TierOutcome(score=a[0], grade=a[1], cost=1.0, latency_ms=100),
            "big": TierOutcome(score=b[0], grade=b[1], cost=10.0, latency_ms=1000),
        },
    )


# cheap costs 1, big costs 10 per question. q3 has no answer in the knowledge.
ROWS = [
    _row("q1", True, (0.9, 1.0), (0.8, 1.0)),
    _row("q2", True, (0.3, 0.0), (0.9, 1.0)),
    _row("q3", False, (0.2, 0.0), (0.2, 0.0)),
    _row("q4", True, (0.6, 0.5), (0.7, 1.0)),
]


def test_replay_escalates_below_threshold_and_pays_every_attempt() -> None:
    point = policy_replay(rows=ROWS, tiers=["cheap", "big"], thresholds=[0.5, 0.0])
    # q1, q4 stay on cheap (1 each); q2, q3 escalate (1 + 10 each).
    assert point.mean_cost == pytest.approx((1 + 11 + 11 + 1) / 4)
    assert point.f1 == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert point.escalation_rate == pytest.approx(0.5)
    assert point.latency_p50_ms == pytest.approx(600)  # median of 100, 1100, 1100, 100


def test_low_score_on_last_tier_abstains_and_is_graded_by_answerability() -> None:
    point = policy_replay(rows=ROWS, tiers=["cheap", "big"], thresholds=[0.5, 0.5])
    assert point.abstention_unanswerable == 1.0  # q3 declined
    assert point.false_abstention == 0.0
    assert point.f1 == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    alone = policy_replay(rows=ROWS, tiers=["cheap"], thresholds=[0.5])
    # q2 (answerable) and q3 (not) abstain: one right, one wrong.
    assert alone.f1 == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert alone.false_abstention == pytest.approx(1 / 3)


def test_a_tier_saying_it_does_not_know_escalates_whatever_its_score() -> None:
    rows = [
        QuestionRow(
            "q",
            True,
            {
                "cheap": TierOutcome(score=0.99, grade=0.0, cost=1.0, abstained=True),
                "big": TierOutcome(score=0.1, grade=1.0, cost=10.0),
            },
        )
    ]
    point = policy_replay(rows=rows, tiers=["cheap", "big"], thresholds=[0.5, 0.0])
    assert point.f1 == 1.0 and point.mean_cost == 11.0


def test_search_finds_the_hand_checked_optimum_for_each_budget() -> None:
    points = policies_search(rows=ROWS, tier_order=["cheap", "big"])
    best = best_under_budget(points=points, budget=6.0)
    assert best is not None
    assert best.tiers == ("cheap", "big")
    assert (best.f1, best.mean_cost) == pytest.approx((0.875, 6.0))
    assert 0.3 < best.thresholds[0] <= 0.6 and 0.2 < best.thresholds[1] <= 0.9

    roomy = best_under_budget(points=points, budget=9.0)
    assert roomy is not None and roomy.tiers == ("cheap", "big")
    # Everything right, cheaper than the big tier alone (10): only q1 stays on cheap.
    assert (roomy.f1, roomy.mean_cost) == pytest.approx((1.0, 8.5))

    tight = best_under_budget(points=points, budget=1.0)
    assert tight is not None and tight.tiers == ("cheap",)
    assert tight.f1 == pytest.approx(0.625)
    assert best_under_budget(points=points, budget=0.5) is None


def test_target_picks_the_cheapest_point_reaching_it() -> None:
    points = policies_search(rows=ROWS, tier_order=["cheap", "big"])
    point = cheapest_above_target(points=points, target_f1=0.8)
    assert point is not None and point.mean_cost == pytest.approx(6.0)
    perfect = cheapest_above_target(points=points, target_f1=1.0)
    assert perfect is not None and perfect.mean_cost == pytest.approx(8.5)
    assert cheapest_above_target(points=points, target_f1=1.01) is None


def test_frontier_is_increasing_in_both_cost_and_f1() -> None:
    frontier = pareto_frontier(policies_search(rows=ROWS, tier_order=["cheap", "big"]))
    costs = [p.mean_cost for p in frontier]
    f1s = [p.f1 for p in frontier]
    assert costs == sorted(costs) and f1s == sorted(f1s) and len(set(f1s)) == len(f1s)
    assert frontier[-1].f1 == 1.0 and frontier[-1].mean_cost == pytest.approx(8.5)


def test_single_tiers_and_incomplete_rows() -> None:
    alone = {p.tiers[0]: p for p in single_tier_points(rows=ROWS, tier_order=["cheap", "big"])}
    assert alone["big"].f1 == pytest.approx(0.75) and alone["big"].mean_cost == 10.0
    partial = [*ROWS, QuestionRow("q5", True, {"cheap": TierOutcome(0.9, 1.0, 1.0)})]
    # q5 has no "big" outcome: a two-tier replay cannot use it.
    assert policy_replay(rows=partial, tiers=["cheap", "big"], thresholds=[0, 0]).questions == 4
    with pytest.raises(ValueError):
        policy_replay(rows=ROWS, tiers=["cheap"], thresholds=[0.1, 0.2])


def test_objective_answerable_f1_ignores_right_abstentions() -> None:
    points = policies_search(rows=ROWS, tier_order=["cheap", "big"])
    # On answerable questions only (q1, q2, q4), being perfect needs big for q2 and q4 (cheap
    # grades 0.5 on q4); the cheapest way keeps q1 on cheap (threshold in (0.6, 0.9]).
    best = best_under_budget(points=points, budget=10.0, objective="answerable_f1")
    assert best is not None and best.answerable_f1 == pytest.approx(1.0)
    assert best.mean_cost == pytest.approx(8.5)  # cheap keeps only q1; q2, q3, q4 escalate
    with pytest.raises(ValueError):
        best_under_budget(points=points, budget=10.0, objective="speed")


def test_balanced_objective_and_abstention_floor() -> None:
    point = policy_replay(rows=ROWS, tiers=["cheap", "big"], thresholds=[0.5, 0.5])
    # Answerable F1 (1 + 1 + 0.5) / 3, every unanswerable question declined.
    assert point.balanced == pytest.approx((2.5 / 3 + 1.0) / 2)
    points = policies_search(rows=ROWS, tier_order=["cheap", "big"])
    declining = with_min_abstention(points, min_abstention=1.0)
    assert declining and all(p.abstention_unanswerable == 1.0 for p in declining)
    assert len(with_min_abstention(points, min_abstention=None)) == len(points)
    best = best_under_budget(points=declining, budget=6.0, objective="answerable_f1")
    assert best is not None and best.answerable_f1 == pytest.approx(2.5 / 3)
