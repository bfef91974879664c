"""Cascade tuning from stored evaluation rows: replay policies, no model calls (FrugalGPT's search).

A *policy* is an ordered subset of tiers (cheapest first) with one threshold per tier. It
is replayed on stored rows (per question and tier: score, grade, cost, latency, abstained):

- a tier's answer is accepted when it did not abstain and its score reaches the tier's
  threshold; otherwise the cascade escalates to the next tier (every attempt is paid for);
- on the last tier a score below its threshold, or its own "I don't know", makes the
  answer an abstention. An abstention grades 1 on an unanswerable question, 0 otherwise.

`f1` is the mean grade over all questions (answerable ones by token F1, unanswerable ones
by whether the policy abstained), so one number ranks policies; the parts are reported too.
This module is plain data in, plain data out: `chatbot` reads the rows from the ORM.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TierOutcome:
    """What one tier did on one question during an evaluation run."""

    score: float
    grade: float
    cost: float
    latency_ms: float = 0.0
    abstained: bool = False


@dataclass(frozen=True)
class QuestionRow:
    """One evaluated question with every tier's stored outcome."""

    question_id: str
    answerable: bool
    outcomes: dict[str, TierOutcome]


@dataclass(frozen=True)
class PolicyPoint:
    """A replayed policy and its figures (costs are means per question)."""

    tiers: tuple[str, ...]
    thresholds: tuple[float, ...]
    f1: float
    answerable_f1: float
    abstention_unanswerable: float
    false_abstention: float
    mean_cost: float
    latency_p50_ms: float
    latency_p95_ms: float
    escalation_rate: float
    questions: int
    label: str = ""
    balanced: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (tiers and thresholds as lists)."""
        data = asdict(self)
        data["tiers"] = list(self.tiers)
        data["thresholds"] = [round(t, 4) for t in self.thresholds]
        return data


@dataclass
class _Arrays:
    answerable: np.ndarray
    score: dict[str, np.ndarray] = field(default_factory=dict)
    grade: dict[str, np.ndarray] = field(default_factory=dict)
    cost: dict[str, np.ndarray] = field(default_factory=dict)
    latency: dict[str, np.ndarray] = field(default_factory=dict)
    abstained: dict[str, np.ndarray] = field(default_factory=dict)


def complete_rows(*, rows: Iterable[QuestionRow], tiers: Sequence[str]) -> list[QuestionRow]:
    """The rows that hold an outcome for every one of `tiers` (a replay needs them all)."""
    return [r for r in rows if all(t in r.outcomes for t in tiers)]


def _arrays(rows: Sequence[QuestionRow], tiers: Sequence[str]) -> _Arrays:
    arrays = _Arrays(answerable=np.array([r.answerable for r in rows], dtype=bool))
    for tier in tiers:
        outcomes = [r.outcomes[tier] for r in rows]
        arrays.score[tier] = np.array([o.score for o in outcomes], dtype=float)
        arrays.grade[tier] = np.array([o.grade for o in outcomes], dtype=float)
        arrays.cost[tier] = np.array([o.cost for o in outcomes], dtype=float)
        arrays.latency[tier] = np.array([o.latency_ms for o in outcomes], dtype=float)
        arrays.abstained[tier] = np.array([o.abstained for o in outcomes], dtype=bool)
    return arrays


def _replay(
    arrays: _Arrays, tiers: Sequence[str], thresholds: Sequence[float], label: str = ""
) -> PolicyPoint:
    n = len(arrays.answerable)
    pending = np.ones(n, dtype=bool)
    grade = np.zeros(n)
    cost = np.zeros(n)
    latency = np.zeros(n)
    abstain = np.zeros(n, dtype=bool)
    attempts = np.zeros(n, dtype=int)
    for index, (tier, threshold) in enumerate(zip(tiers, thresholds, strict=True)):
        cost += np.where(pending, arrays.cost[tier], 0.0)
        latency += np.where(pending, arrays.latency[tier], 0.0)
        attempts += pending
        accept = pending & ~arrays.abstained[tier] & (arrays.score[tier] >= threshold)
        grade = np.where(accept, arrays.grade[tier], grade)
        pending = pending & ~accept
        if index == len(tiers) - 1:
            abstain = pending
    # An abstention is right exactly when the question has no answer in the knowledge.
    grade = np.where(abstain, (~arrays.answerable).astype(float), grade)
    answerable, unanswerable = arrays.answerable, ~arrays.answerable
    return PolicyPoint(
        tiers=tuple(tiers),
        thresholds=tuple(float(t) for t in thresholds),
        f1=_mean(grade),
        answerable_f1=_mean(grade[answerable]),
        abstention_unanswerable=_mean(abstain[unanswerable]),
        false_abstention=_mean(abstain[answerable]),
        mean_cost=_mean(cost),
        latency_p50_ms=float(np.percentile(latency, 50)) if n else 0.0,
        latency_p95_ms=float(np.percentile(latency, 95)) if n else 0.0,
        escalation_rate=_mean(attempts > 1),
        questions=n,
        label=label,
        # Immune to the mix of answerable and unanswerable questions (unlike f1).
        balanced=(_mean(grade[answerable]) + _mean(abstain[unanswerable])) / 2,
    )


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def policy_replay(
    *,
    rows: Sequence[QuestionRow],
    tiers: Sequence[str],
    thresholds: Sequence[float],
    label: str = "",
) -> PolicyPoint:
    """Replay one policy (tiers cheapest first, one threshold each) on the complete rows."""
    if len(tiers) != len(thresholds) or not tiers:
        raise ValueError("policy_replay needs one threshold per tier and at least one tier")
    usable = complete_rows(rows=rows, tiers=tiers)
    return _replay(_arrays(usable, tiers), tiers, thresholds, label)


def threshold_candidates(*, scores: Sequence[float], count: int = 12) -> list[float]:
    """Candidate thresholds for one tier: 0 (always accept) and up to `count` score quantiles."""
    # Quantiles of the distinct scores: many equal scores (e.g. the same signals on every
    # declined question) would otherwise collapse the grid to a few points.
    values = np.unique(np.round(np.asarray(list(scores), dtype=float), 4))
    if values.size == 0:
        return [0.0]
    if values.size > count:
        values = np.quantile(values, np.linspace(0.0, 1.0, count + 1)[1:], method="nearest")
    # A threshold equal to an observed score accepts that score: candidates sit on the data.
    return sorted({0.0, *(float(v) for v in values)})


def policies_search(
    *,
    rows: Sequence[QuestionRow],
    tier_order: Sequence[str],
    candidates_per_tier: int = 12,
    max_tiers: int = 3,
) -> list[PolicyPoint]:
    """Replay every tier subset (in order) with every combination of candidate thresholds."""
    usable = complete_rows(rows=rows, tiers=tier_order)
    arrays = _arrays(usable, tier_order)
    # Only answers a threshold can decide on: a tier's own "I don't know" escalates anyway.
    grids = {
        t: threshold_candidates(
            scores=arrays.score[t][~arrays.abstained[t]].tolist(), count=candidates_per_tier
        )
        for t in tier_order
    }
    points: list[PolicyPoint] = []
    for size in range(1, min(max_tiers, len(tier_order)) + 1):
        for subset in itertools.combinations(tier_order, size):
            for thresholds in itertools.product(*(grids[t] for t in subset)):
                points.append(_replay(arrays, subset, thresholds))
    return points


# What "accuracy" means to the search: `f1` counts a right abstention as a right answer (with
# many unanswerable questions, "always abstain" can win it); `answerable_f1` looks only at
# questions the knowledge answers; `balanced` is the mean of answerable F1 and the abstention
# rate on unanswerable questions, whatever their mix.
OBJECTIVES = ("f1", "answerable_f1", "balanced")


def with_min_abstention(
    points: Iterable[PolicyPoint], *, min_abstention: float | None
) -> list[PolicyPoint]:
    """The points that decline at least `min_abstention` of the unanswerable questions."""
    if min_abstention is None:
        return list(points)
    return [p for p in points if p.abstention_unanswerable >= min_abstention - 1e-12]


def _accuracy(point: PolicyPoint, objective: str) -> float:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    return float(getattr(point, objective))


def pareto_frontier(points: Iterable[PolicyPoint], *, objective: str = "f1") -> list[PolicyPoint]:
    """The points no other point beats on both cost (lower) and accuracy (higher), cheapest first."""
    frontier: list[PolicyPoint] = []
    best = -1.0
    for point in sorted(
        points, key=lambda p: (p.mean_cost, -_accuracy(p, objective), len(p.tiers))
    ):
        if _accuracy(point, objective) > best + 1e-12:
            frontier.append(point)
            best = _accuracy(point, objective)
    return frontier


def best_under_budget(
    *, points: Iterable[PolicyPoint], budget: float, objective: str = "f1"
) -> PolicyPoint | None:
    """The most accurate point whose mean cost per question is within `budget` (cheaper on ties)."""
    affordable = [p for p in points if p.mean_cost <= budget + 1e-15]
    if not affordable:
        return None
    return max(
        affordable,
        key=lambda p: (round(_accuracy(p, objective), 9), -p.mean_cost, -len(p.tiers)),
    )


def cheapest_above_target(
    *, points: Iterable[PolicyPoint], target_f1: float, objective: str = "f1"
) -> PolicyPoint | None:
    """The cheapest point whose accuracy reaches `target_f1` (more accurate on ties)."""
    good = [p for p in points if _accuracy(p, objective) >= target_f1 - 1e-12]
    if not good:
        return None
    return min(good, key=lambda p: (p.mean_cost, -_accuracy(p, objective), len(p.tiers)))


def single_tier_points(
    *, rows: Sequence[QuestionRow], tier_order: Sequence[str]
) -> list[PolicyPoint]:
    """Each tier alone, always accepting its answer (its own "I don't know" still abstains)."""
    rows = complete_rows(rows=rows, tiers=tier_order)
    return [
        policy_replay(rows=rows, tiers=[t], thresholds=[0.0], label=f"{t} alone")
        for t in tier_order
    ]
