"""THE threshold search: tier subsets, thresholds and relevance floors replayed against goals.

Every policy is replayed with `routing.evaluation.replay` (the live cascade's decisions). The
goals cover what the commands and the tuning page ask for:

- `max_cost_ratio`: mean cost at most this share of the largest tier alone (default 0.70);
- `max_f1_loss`: answerable F1 at most this much below the largest tier alone (default 0.02);
- `min_near_miss_abstention`: decline at least this share of the SQuAD questions without answer;
- `budget`: mean cost per question at most this (USD);
- `target_f1`: answerable F1 at least this.

Among the policies meeting every goal set: with a target F1 the cheapest; with a budget the
most accurate; otherwise the one declining most near misses, then most off-topic questions,
then the most accurate, then the cheapest. No policy meets them: no choice (the caller keeps
the current setting and says so). The Pareto frontier (cost against answerable F1) comes too.
Run the search on the fit split and report the choice on the test split.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from routing.evaluation.replay import (
    Policy,
    QuestionRow,
    Summary,
    policy_summary,
    rows_complete,
    rows_rescore,
)

# Relevance floors the search tries (with the floor the run's rows were collected at: a replay
# cannot answer a question the collection already declined, so only floors at or above it).
RELEVANCE_FLOORS = (0.25, 0.30, 0.35, 0.40)
# Cross-encoder relevance floors (probabilities), tried when the rows were reranked: MS MARCO
# MiniLM gives off-topic passages logits around -10 (relevance ~0.0001), on-topic ones above 0.
RERANK_FLOORS = (0.001, 0.01, 0.05, 0.2)


def floors_to_try(*, collected: float) -> list[float]:
    """The floors a search may choose on rows collected at `collected`."""
    return sorted({collected, *(f for f in RELEVANCE_FLOORS if f >= collected)})


def rerank_floors_to_try(*, rows: Sequence[QuestionRow], collected: float) -> list[float]:
    """The cross-encoder floors a search may choose (only `collected` when nothing was reranked)."""
    if not any(r.top_relevance is not None for r in rows):
        return [collected]
    return sorted({collected, *(f for f in RERANK_FLOORS if f >= collected)})


@dataclass(frozen=True)
class Goal:
    """Constraints on a policy (None: not constrained); see the module docstring."""

    max_cost_ratio: float | None = 0.70
    max_f1_loss: float | None = 0.02
    min_near_miss_abstention: float | None = None
    budget: float | None = None
    target_f1: float | None = None

    def admits(self, summary: Summary, reference: Summary) -> bool:
        """True when the policy's figures meet every constraint set."""
        f1 = summary.answerable_f1 or 0.0
        if self.max_cost_ratio is not None and reference.mean_cost:
            if summary.mean_cost > self.max_cost_ratio * reference.mean_cost + 1e-15:
                return False
        if self.max_f1_loss is not None:
            if f1 < (reference.answerable_f1 or 0.0) - self.max_f1_loss - 1e-12:
                return False
        if self.min_near_miss_abstention is not None:
            if (summary.near_miss_abstention or 0.0) < self.min_near_miss_abstention - 1e-12:
                return False
        if self.budget is not None and summary.mean_cost > self.budget + 1e-15:
            return False
        return self.target_f1 is None or f1 >= self.target_f1 - 1e-12

    def rank(self, summary: Summary) -> tuple[float, ...]:
        """Higher is better among admitted policies."""
        f1, cost, size = summary.answerable_f1 or 0.0, summary.mean_cost, len(summary.policy.tiers)
        if self.target_f1 is not None:
            return (-cost, f1, -size)
        if self.budget is not None:
            return (round(f1, 9), -cost, -size)
        return (
            round(summary.near_miss_abstention or 0.0, 9),
            round(summary.off_topic_abstention or 0.0, 9),
            round(f1, 9),
            -cost,
            -size,
        )


@dataclass
class SearchResult:
    """The reference (largest tier alone), every policy tried, the frontier and the choice."""

    reference: Summary
    points: list[Summary]
    frontier: list[Summary]
    chosen: Summary | None


def threshold_candidates(*, scores: Sequence[float], count: int = 8) -> list[float]:
    """Candidate thresholds for one tier: 0 (always accept) and up to `count` score quantiles."""
    # Quantiles of the distinct scores: many equal scores would collapse the grid.
    values = np.unique(np.round(np.asarray(list(scores), dtype=float), 4))
    if values.size > count:
        values = np.quantile(values, np.linspace(0.0, 1.0, count + 1)[1:], method="nearest")
    # A threshold equal to an observed score accepts that score: candidates sit on the data.
    return sorted({0.0, *(float(v) for v in values)})


def pareto_frontier(points: Sequence[Summary]) -> list[Summary]:
    """The policies no other is both cheaper than and more accurate than, cheapest first."""
    frontier: list[Summary] = []
    best = -1.0
    ordered = sorted(
        points, key=lambda p: (p.mean_cost, -(p.answerable_f1 or 0.0), len(p.policy.tiers))
    )
    for point in ordered:
        if (point.answerable_f1 or 0.0) > best + 1e-12:
            frontier.append(point)
            best = point.answerable_f1 or 0.0
    return frontier


def tier_subsets(*, tier_order: Sequence[str], max_tiers: int = 3) -> list[tuple[str, ...]]:
    """Every subset of the tiers, kept in order, of at most `max_tiers` tiers."""
    return [
        subset
        for size in range(1, min(max_tiers, len(tier_order)) + 1)
        for subset in itertools.combinations(tier_order, size)
    ]


def policies_search(
    *,
    rows: Sequence[QuestionRow],
    tier_order: Sequence[str],
    goal: Goal | None = None,
    weights: Mapping[str, float] | None = None,
    support_check: bool = True,
    floors: Sequence[float] = (0.0,),
    reference_floor: float = 0.0,
    rerank_floors: Sequence[float] = (0.0,),
    reference_rerank_floor: float = 0.0,
    subsets: Sequence[Sequence[str]] | None = None,
    candidates_per_tier: int = 8,
) -> SearchResult:
    """Replay every subset, candidate thresholds and floor on `rows`; the frontier and the choice.

    `tier_order` is cheapest first; its last tier alone (threshold 0, `reference_floor`) is the
    reference for the cost ratio and the F1 loss. `subsets` defaults to every ordered subset
    (pass the starting-tier slices to search only those). The chosen policy carries `weights`.
    """
    rows = rows_rescore(
        rows=rows_complete(rows=rows, tiers=tier_order),
        weights=weights,
        support_check=support_check,
    )
    largest = tier_order[-1]
    reference = policy_summary(
        rows=rows,
        policy=Policy(
            tiers=(largest,),
            thresholds=(0.0,),
            floor=reference_floor,
            rerank_floor=reference_rerank_floor,
            support_check=support_check,
            label=f"{largest} alone",
        ),
    )
    # Only answers a threshold can decide on: an "I don't know" or a failure escalates anyway.
    grids = {
        t: threshold_candidates(
            scores=[
                r.tiers[t].score
                for r in rows
                if not r.tiers[t].said_dont_know and not r.tiers[t].error
            ],
            count=candidates_per_tier,
        )
        for t in tier_order
    }
    points: list[Summary] = []
    for subset in subsets or tier_subsets(tier_order=tier_order):
        for thresholds in itertools.product(*(grids[t] for t in subset)):
            for floor, rerank_floor in itertools.product(floors, rerank_floors):
                policy = Policy(
                    tiers=tuple(subset),
                    thresholds=tuple(thresholds),
                    floor=floor,
                    rerank_floor=rerank_floor,
                    support_check=support_check,
                )
                points.append(policy_summary(rows=rows, policy=policy, reference=reference))
    goal = goal or Goal()
    admitted = [p for p in points if goal.admits(p, reference)]
    chosen = max(admitted, key=goal.rank) if admitted else None
    if chosen is not None and weights is not None:
        # The rows were scored with these weights: the policy to apply or replay carries them.
        chosen.policy = Policy(
            tiers=chosen.policy.tiers,
            thresholds=chosen.policy.thresholds,
            floor=chosen.policy.floor,
            rerank_floor=chosen.policy.rerank_floor,
            weights=weights,
            support_check=support_check,
        )
    return SearchResult(
        reference=reference, points=points, frontier=pareto_frontier(points), chosen=chosen
    )
