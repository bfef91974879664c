"""Grading and summaries for evaluation runs: SQuAD-style grades, per-question cascade replay.

Plain data only; `chatbot`'s evaluate command reads and writes the ORM rows.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from routing.scorer import auc

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CITATION = re.compile(r"\[\d{1,2}\]")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _CITATION.sub(" ", text.lower())
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in gold))


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    """Best token F1 of the prediction against the gold answers (SQuAD)."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in gold:
        ref = normalize_answer(answer).split()
        common = collections.Counter(pred) & collections.Counter(ref)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(pred), same / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class Grade:
    """Exact match, F1, whether an abstention was right, and one number ('grade')."""

    exact_match: float
    f1: float
    correct_abstention: bool | None
    grade: float


def answer_grade(*, answer: str, abstained: bool, answerable: bool, gold: Sequence[str]) -> Grade:
    """Grade one answer: F1 on answerable questions, abstention on unanswerable ones."""
    if not answerable:
        return Grade(0.0, 0.0, abstained, 1.0 if abstained else 0.0)
    if abstained:
        return Grade(0.0, 0.0, None, 0.0)
    f1 = token_f1(answer, gold)
    return Grade(exact_match(answer, gold), f1, None, f1)


def answer_right(result: object) -> bool:
    """The scorer's label: an answered, answerable question whose answer holds a gold answer.

    Token F1 >= 0.5 or the gold span inside the answer: a full sentence around the right
    words is right for a customer, though SQuAD's F1 punishes its length.
    """
    if not result.answerable or result.abstained:  # type: ignore[attr-defined]
        return False
    answer = normalize_answer(result.answer)  # type: ignore[attr-defined]
    gold = [normalize_answer(g) for g in result.gold_answers]  # type: ignore[attr-defined]
    return result.f1 >= 0.5 or any(g and g in answer for g in gold)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Row:
    """One question with each tier's stored outcome (tier -> dict of score, grade, ...)."""

    question_id: str
    source: str  # squad or off_topic
    answerable: bool
    split: str
    # f1, score, cost, latency_ms, abstained; optionally check_cost and check_latency_ms (the
    # support check's share of cost and latency, not paid where the threshold is 0)
    tiers: Mapping[str, Mapping[str, float]]
    top_similarity: float = 0.0  # best passage's cosine similarity (0: none retrieved)


@dataclass(frozen=True)
class Outcome:
    """What a policy did on one question."""

    f1: float
    abstained: bool
    cost: float
    latency_ms: float
    tier: str | None
    attempts: int


def replay_question(
    row: Row, *, tiers: Sequence[str], thresholds: Sequence[float], floor: float = 0.0
) -> Outcome:
    """Replay one question through a cascade from stored rows (no model call)."""
    if row.top_similarity < floor:
        # The relevance floor declines before any model runs.
        return Outcome(0.0, True, 0.0, 0.0, None, 0)
    cost = latency = 0.0
    for index, (tier, threshold) in enumerate(zip(tiers, thresholds, strict=True)):
        data = row.tiers[tier]
        cost += float(data["cost"])
        latency += float(data["latency_ms"])
        if threshold <= 0:
            # A threshold of 0 cannot refuse: the cascade skips the support check there.
            cost -= float(data.get("check_cost", 0.0))
            latency -= float(data.get("check_latency_ms", 0.0))
        if not data["abstained"] and float(data["score"]) >= threshold:
            return Outcome(float(data["f1"]), False, cost, latency, tier, index + 1)
    return Outcome(0.0, True, cost, latency, None, len(tiers))


def summarize(rows: Sequence[Row], outcomes: Sequence[Outcome]) -> dict[str, float]:
    """The figures of the issue's table for one policy (means per question)."""
    answerable = [o for r, o in zip(rows, outcomes, strict=True) if r.answerable]
    unanswerable = [
        o for r, o in zip(rows, outcomes, strict=True) if not r.answerable and r.source == "squad"
    ]
    off_topic = [o for r, o in zip(rows, outcomes, strict=True) if r.source == "off_topic"]
    latencies = np.array([o.latency_ms for o in outcomes] or [0.0])
    return {
        "questions": len(outcomes),
        "answerable_f1": _mean([o.f1 for o in answerable]),
        "abstain_unanswerable": _mean([o.abstained for o in unanswerable]),
        "abstain_off_topic": _mean([o.abstained for o in off_topic]),
        "false_abstention": _mean([o.abstained for o in answerable]),
        "mean_cost": _mean([o.cost for o in outcomes]),
        "escalation_rate": _mean([o.attempts > 1 for o in outcomes]),
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
    }


def _mean(values: Sequence[float | bool]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def policy_summary(
    rows: Sequence[Row], *, tiers: Sequence[str], thresholds: Sequence[float], floor: float = 0.0
) -> dict[str, float]:
    """Replay a policy on every row holding all its tiers and summarise it."""
    usable = [r for r in rows if all(t in r.tiers for t in tiers)]
    outcomes = [replay_question(r, tiers=tiers, thresholds=thresholds, floor=floor) for r in usable]
    return summarize(usable, outcomes)


def thresholds_choose(
    rows: Sequence[Row],
    *,
    tiers: Sequence[str],
    largest: str,
    max_cost_ratio: float = 0.70,
    max_f1_loss: float = 0.02,
    grid: int = 21,
    floors: Sequence[float] = (0.0,),
    reference_floor: float = 0.0,
) -> tuple[list[float], float, dict[str, float]]:
    """Thresholds and relevance floor maximising correct abstentions under the goals' bounds.

    Among policies within `max_cost_ratio` of the largest tier's cost (alone, at
    `reference_floor`) and losing at most `max_f1_loss` answerable F1 against it, the one
    that abstains most on unanswerable and off-topic questions (then the cheapest). When
    none meets both bounds, within the cost bound: off-topic declined (>= 98%) first, then
    the highest answerable F1, then the most abstention on unanswerable questions.
    """
    reference = policy_summary(rows, tiers=[largest], thresholds=[0.0], floor=reference_floor)
    budget = reference["mean_cost"] * max_cost_ratio
    values = np.linspace(0.0, 1.0, grid)
    combos = np.array(np.meshgrid(*[values] * len(tiers))).T.reshape(-1, len(tiers))
    best: tuple[tuple[float, ...], list[float], float, dict[str, float]] | None = None
    fallback: tuple[tuple[float, ...], list[float], float, dict[str, float]] | None = None
    for floor in floors:
        for combo in combos:
            thresholds = [float(v) for v in combo]
            figures = policy_summary(rows, tiers=tiers, thresholds=thresholds, floor=floor)
            if figures["mean_cost"] > budget + 1e-15:
                continue
            declined = figures["abstain_unanswerable"] + figures["abstain_off_topic"]
            if figures["answerable_f1"] >= reference["answerable_f1"] - max_f1_loss:
                key = (declined, -figures["mean_cost"])
                if best is None or key > best[0]:
                    best = (key, thresholds, floor, figures)
            # Short of the goals: decline off-topic questions (cheap, before any model), then
            # keep as much answerable F1 as the budget buys, then decline what is left.
            key = (
                float(figures["abstain_off_topic"] >= 0.98),
                round(figures["answerable_f1"], 3),
                declined,
                -figures["mean_cost"],
            )
            if fallback is None or key > fallback[0]:
                fallback = (key, thresholds, floor, figures)
    chosen = best or fallback
    if chosen is None:
        zeros = [0.0] * len(tiers)
        return zeros, reference_floor, policy_summary(rows, tiers=tiers, thresholds=zeros)
    return chosen[1], chosen[2], chosen[3]


# Relevance floors the evaluation commands replay (only those at or above the floor a run's
# rows were collected at).
RELEVANCE_FLOORS = (0.25, 0.30, 0.35, 0.40)


def signal_aucs(
    signals: Sequence[Mapping[str, float]], labels: Sequence[bool], names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Each signal's AUC alone (higher = more often right), over the rows that have it.

    Below 0.5 the signal points the other way (a fitted weight turns it round); `n` counts
    the rows holding the signal.
    """
    out: dict[str, dict[str, float | int]] = {}
    for name in names:
        pairs = [(float(s[name]), y) for s, y in zip(signals, labels, strict=True) if name in s]
        if not pairs:
            continue
        value = auc([p[0] for p in pairs], [p[1] for p in pairs])
        out[name] = {"auc": round(value, 4) if value == value else None, "n": len(pairs)}
    return out


def relative_to(figures: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """A policy's figures with its cost and answerable F1 relative to a reference policy."""
    data = dict(figures)
    data["cost_vs_reference"] = (
        figures["mean_cost"] / reference["mean_cost"] if reference["mean_cost"] else float("nan")
    )
    data["f1_vs_reference"] = (
        figures["answerable_f1"] / reference["answerable_f1"]
        if reference["answerable_f1"]
        else float("nan")
    )
    data["f1_points_lost"] = 100 * (reference["answerable_f1"] - figures["answerable_f1"])
    return data
