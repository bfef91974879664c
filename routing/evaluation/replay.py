"""THE replay: what a cascade policy would have done on stored rows, without calling a model.

Each question was answered once by every tier alone (`TierRow`: its signals, whether it said
"I don't know", its error, its F1, the answer call's and the support check's cost). Replaying a
policy (tiers in order, one threshold each, a relevance floor, scorer weights) walks the tiers
with the live cascade's own decisions from `routing.cascade`, so the replay and the live
cascade cannot drift apart:

- `below_floor`: the question is declined before any model runs (cost 0, no tier);
- a tier whose call failed falls through to the next at the failed call's cost (0 when the
  server never answered);
- `decide` on the score recomputed from the row's signals with the policy's weights:
  "accepted" answers; otherwise the next tier, and on the last tier an abstention;
- every tier failed, none scored: an error (no answer, not an abstention); some tier scored and
  the last failed: an abstention ("no_answer");
- the support check is paid only where the tier's threshold is above 0 (the live cascade does
  not ask it at 0), and only when the policy has the check on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from routing.cascade import below_floor, decide
from routing.scorer import score_signals

CHECK_SIGNAL = "check_yes"


@dataclass(frozen=True)
class TierRow:
    """One question answered by one tier alone, as the replay needs it."""

    signals: Mapping[str, float]
    score: float  # as stored (used when a policy gives no weights, or the row has no signals)
    said_dont_know: bool = False
    error: str = ""  # the call's error code; "" when it answered
    f1: float = 0.0
    exact_match: float = 0.0
    call_cost: float = 0.0  # the answer call alone
    check_cost: float = 0.0  # the support check, when it was asked
    latency_ms: float = 0.0  # the answer call alone
    check_latency_ms: float = 0.0
    check_key: str = ""  # the passage the check asked about (asked once per passage live)


@dataclass(frozen=True)
class QuestionRow:
    """One question with every tier's stored answer."""

    question_id: str
    source: str  # "squad" or "off_topic"
    answerable: bool
    split: str  # "fit" or "test"
    top_similarity: float  # best retrieved passage's cosine similarity (0.0: none)
    tiers: Mapping[str, TierRow]
    top_relevance: float | None = None  # its cross-encoder relevance (None: not reranked)

    @property
    def near_miss(self) -> bool:
        """A SQuAD question the knowledge does not answer (unlike an off-topic one)."""
        return self.source == "squad" and not self.answerable


@dataclass(frozen=True)
class Policy:
    """Tiers in order with one threshold each, a relevance floor and the scorer's weights.

    `weights` None: each row's stored score. `support_check` False: the check is neither paid
    nor part of the score (as with CASCADE_SUPPORT_CHECK off).
    """

    tiers: tuple[str, ...]
    thresholds: tuple[float, ...]
    floor: float = 0.0
    rerank_floor: float = 0.0
    weights: Mapping[str, float] | None = None
    support_check: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        """Reject a policy the cascade could not run."""
        if not self.tiers or len(self.tiers) != len(self.thresholds):
            raise ValueError("A policy needs at least one tier and one threshold per tier.")

    def describe(self) -> str:
        """e.g. 'medium ≥ 0.40 → large ≥ 0.00, floor 0.30' (', relevance ≥ 0.05' when set)."""
        steps = " → ".join(
            f"{t} ≥ {v:.2f}" for t, v in zip(self.tiers, self.thresholds, strict=True)
        )
        rerank = f", relevance ≥ {self.rerank_floor:.2f}" if self.rerank_floor else ""
        return f"{steps}, floor {self.floor:.2f}{rerank}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "label": self.label or self.describe(),
            "tiers": list(self.tiers),
            "thresholds": [round(float(v), 4) for v in self.thresholds],
            "floor": self.floor,
            "rerank_floor": self.rerank_floor,
            "support_check": self.support_check,
        }


@dataclass(frozen=True)
class Outcome:
    """What a policy did on one question."""

    tier: str | None  # the tier that answered; None when declined, abstained or failed
    abstained: bool
    error: bool
    f1: float
    cost: float
    latency_ms: float
    attempts: int
    reason: str = ""  # no_passages, low_score, dont_know, no_answer; "" when answered


def tier_score(*, row: TierRow, weights: Mapping[str, float] | None, support_check: bool) -> float:
    """The score a tier's answer gets under these weights (the stored one when weights is None)."""
    if weights is None or not row.signals:
        return row.score
    signals = row.signals
    if not support_check and CHECK_SIGNAL in signals:
        signals = {k: v for k, v in signals.items() if k != CHECK_SIGNAL}
    return score_signals(signals, weights)


def question_replay(*, row: QuestionRow, policy: Policy) -> Outcome:
    """Replay one question through a policy with the live cascade's decisions."""
    if below_floor(
        top_similarity=row.top_similarity,
        floor=policy.floor,
        top_relevance=row.top_relevance,
        rerank_floor=policy.rerank_floor,
    ):
        return Outcome(None, True, False, 0.0, 0.0, 0.0, 0, "no_passages")
    cost = latency = 0.0
    last_decision = ""
    scored = False
    checked: set[str] = set()  # live, a passage's check is asked once per answer
    for tier, threshold in zip(policy.tiers, policy.thresholds, strict=True):
        data = row.tiers[tier]
        cost += data.call_cost
        latency += data.latency_ms
        if data.error:
            last_decision = "error"
            continue
        if threshold > 0 and policy.support_check and data.check_key not in checked:
            cost += data.check_cost
            latency += data.check_latency_ms
            if data.check_key:
                checked.add(data.check_key)
        score = tier_score(row=data, weights=policy.weights, support_check=policy.support_check)
        last_decision = decide(score=score, threshold=threshold, said_dont_know=data.said_dont_know)
        scored = True
        if last_decision == "accepted":
            attempts = policy.tiers.index(tier) + 1
            return Outcome(tier, False, False, data.f1, cost, latency, attempts)
    attempts = len(policy.tiers)
    if not scored:
        return Outcome(None, False, True, 0.0, cost, latency, attempts, "error")
    reason = last_decision if last_decision in ("low_score", "dont_know") else "no_answer"
    return Outcome(None, True, False, 0.0, cost, latency, attempts, reason)


def rows_complete(*, rows: Sequence[QuestionRow], tiers: Sequence[str]) -> list[QuestionRow]:
    """The rows holding an answer from every one of `tiers` (a replay needs them all)."""
    return [r for r in rows if all(t in r.tiers for t in tiers)]


def rows_rescore(
    *, rows: Sequence[QuestionRow], weights: Mapping[str, float] | None, support_check: bool = True
) -> list[QuestionRow]:
    """The rows with each tier's score computed once under these weights (for a search)."""
    return [
        replace(
            row,
            tiers={
                name: replace(
                    data,
                    score=tier_score(row=data, weights=weights, support_check=support_check),
                )
                for name, data in row.tiers.items()
            },
        )
        for row in rows
    ]


def _mean(values: Sequence[float | bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass
class Summary:
    """A policy's figures over some questions (means per question; None: no such question)."""

    policy: Policy
    questions: int
    answerable_f1: float | None
    near_miss_abstention: float | None  # SQuAD questions without an answer that were declined
    off_topic_abstention: float | None  # off-topic questions declined
    false_abstention: float | None  # answerable questions declined
    error_rate: float | None
    mean_cost: float
    escalation_rate: float | None
    tier_shares: dict[str, float] = field(default_factory=dict)
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    cost_vs_reference: float | None = None
    f1_vs_reference: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, the policy's description included."""
        data = {k: v for k, v in self.__dict__.items() if k != "policy"}
        return {**self.policy.as_dict(), **data}


def policy_summary(
    *, rows: Sequence[QuestionRow], policy: Policy, reference: Summary | None = None
) -> Summary:
    """Replay a policy on every row holding its tiers and summarise it.

    Off-topic and near-miss questions are always separate figures. With a reference (e.g. the
    largest tier alone on the same rows), cost and answerable F1 are also given relative to it.
    """
    usable = rows_complete(rows=rows, tiers=policy.tiers)
    outcomes = [question_replay(row=r, policy=policy) for r in usable]
    pairs = list(zip(usable, outcomes, strict=True))
    answered = [o for o in outcomes if o.tier]
    latencies = np.array([o.latency_ms for o in outcomes] or [0.0])
    summary = Summary(
        policy=policy,
        questions=len(outcomes),
        answerable_f1=_mean([o.f1 for r, o in pairs if r.answerable]),
        near_miss_abstention=_mean([o.abstained for r, o in pairs if r.near_miss]),
        off_topic_abstention=_mean([o.abstained for r, o in pairs if r.source == "off_topic"]),
        false_abstention=_mean([o.abstained for r, o in pairs if r.answerable]),
        error_rate=_mean([o.error for o in outcomes]),
        mean_cost=_mean([o.cost for o in outcomes]) or 0.0,
        escalation_rate=_mean([o.attempts > 1 for o in outcomes]),
        tier_shares={t: sum(o.tier == t for o in answered) / len(outcomes) for t in policy.tiers}
        if outcomes
        else {},
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p95_ms=float(np.percentile(latencies, 95)),
    )
    if reference is not None:
        summary.cost_vs_reference = (
            summary.mean_cost / reference.mean_cost if reference.mean_cost else None
        )
        summary.f1_vs_reference = (
            summary.answerable_f1 / reference.answerable_f1
            if reference.answerable_f1 and summary.answerable_f1 is not None
            else None
        )
    return summary


def tiers_alone_summaries(
    *,
    rows: Sequence[QuestionRow],
    tier_order: Sequence[str],
    floor: float,
    weights: Mapping[str, float] | None,
) -> list[Summary]:
    """Each tier alone (threshold 0), cheapest first, relative to the last (largest) one."""
    singles = [
        policy_summary(
            rows=rows,
            policy=Policy(
                tiers=(t,), thresholds=(0.0,), floor=floor, weights=weights, label=f"{t} alone"
            ),
        )
        for t in tier_order
    ]
    if not singles:
        return []
    return [policy_summary(rows=rows, policy=s.policy, reference=singles[-1]) for s in singles]
