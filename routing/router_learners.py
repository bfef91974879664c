"""PickLLM's two learners, its reward and the question clusters, as pure functions.

Two learners over the enabled tiers (PickLLM, arXiv 2412.12170), each choosing an arm (a
starting tier) and learning from the reward of the whole cascade that ran from it:

- `sla`: a stochastic learning automaton with the linear reward-inaction (LRI) rule: the chosen
  tier's probability moves towards 1 by `rate * beta`, the others shrink in proportion; beta is
  the reward mapped onto [0, 1] by the lowest and highest rewards the learner has seen (LRI needs
  a reward in [0, 1]; before two different rewards were seen it does not move);
- `qlearning`: stateless Q-learning, Q[a] += rate * (reward - Q[a]), epsilon-greedy: a tier never
  tried is tried first (cheapest first), then a random tier with probability epsilon, else the
  best Q (ties: the cheaper).

reward = w_acc * accuracy - w_cost * cost_usd - w_lat * log(latency_seconds). A reward known
later (a thumbs, a label) is applied by `learner_correct`: Q-learning moves Q[a] by
rate * (new - old reward); SLA undoes its earlier LRI step (the step's exact inverse, as far as
the probability allows) and takes the new one. Either is exactly the update the new reward
would have made when no update came between, and close to it otherwise (later updates shrank
the earlier step's effect).

No database and no clock here: randomness comes from the `random.Random` passed in, so a seed
replays the same choices (bench/router.py replays evaluation runs with them).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("sla", "qlearning")
GLOBAL = -1  # no cluster: the global learner (RouterLearner.GLOBAL)
MIN_SECONDS = 0.001  # latency floor: log(0) is undefined


# --- Reward ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardWeights:
    """w_acc per unit of accuracy, w_cost per US dollar, w_lat per log-second."""

    accuracy: float = 1.0
    cost: float = 200.0
    latency: float = 0.05


def reward_compute(
    *, accuracy: float, cost: float, latency_ms: float, weights: RewardWeights
) -> float:
    """w_acc * accuracy - w_cost * cost - w_lat * log(latency in seconds)."""
    seconds = max(latency_ms / 1000.0, MIN_SECONDS)
    return weights.accuracy * accuracy - weights.cost * cost - weights.latency * math.log(seconds)


def outcome_accuracy(*, attempts: Sequence[Mapping[str, Any]], abstained: bool) -> float:
    """The scorer's accuracy of a cascade's outcome, from its stored attempts.

    Accepted: that answer's score. Abstained: 1 - the last score (declining was right as often
    as the only answer left was wrong). Nothing scored (every tier failed): 0.
    """
    scored = [a for a in attempts if a.get("score") is not None]
    accepted = [a for a in scored if a.get("outcome") == "accepted"]
    if accepted:
        return float(accepted[-1]["score"])
    if abstained and scored:
        return 1.0 - float(scored[-1]["score"])
    return 0.0


def attempts_cost_latency(attempts: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """What the cascade's calls cost (USD) and how long they took (ms), support checks included."""
    cost = sum(float(a.get("cost") or 0.0) for a in attempts)
    latency = sum(
        float(a.get("latency_ms") or 0.0) + float((a.get("check") or {}).get("latency_ms") or 0.0)
        for a in attempts
    )
    return cost, latency


# --- The learners (pure) --------------------------------------------------------------------


@dataclass
class LearnerState:
    """A learner's state as plain data: values are probabilities (sla) or Q-values (qlearning)."""

    kind: str
    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    updates: int = 0
    reward_low: float | None = None
    reward_high: float | None = None


def learner_new(*, kind: str, tiers: Sequence[str]) -> LearnerState:
    """A fresh learner: uniform probabilities (sla) or Q-values of 0 (qlearning)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown learner {kind!r}; choose one of {', '.join(KINDS)}.")
    if not tiers:
        raise ValueError("A learner needs at least one tier.")
    start = 1.0 / len(tiers) if kind == "sla" else 0.0
    return LearnerState(kind=kind, values={t: start for t in tiers}, counts={t: 0 for t in tiers})


def learner_align(state: LearnerState, tiers: Sequence[str]) -> LearnerState:
    """The state over exactly these tiers (a tier enabled or disabled since it learned).

    SLA: a new tier gets 1/n, the known ones share the rest in their learned proportions.
    Q-learning: a new tier starts at Q 0, untried (so it is tried first).
    """
    if not tiers:
        raise ValueError("A learner needs at least one tier.")
    if list(state.values) == list(tiers):
        return state
    counts = {t: int(state.counts.get(t, 0)) for t in tiers}
    if state.kind == "qlearning":
        values = {t: float(state.values.get(t, 0.0)) for t in tiers}
    else:
        new = [t for t in tiers if t not in state.values]
        known = {t: float(state.values[t]) for t in tiers if t in state.values}
        total = sum(known.values())
        if total <= 0:
            values = {t: 1.0 / len(tiers) for t in tiers}
        else:
            rest = 1.0 - len(new) / len(tiers)
            values = {t: known[t] / total * rest if t in known else 1.0 / len(tiers) for t in tiers}
    return LearnerState(
        kind=state.kind,
        values=values,
        counts=counts,
        updates=state.updates,
        reward_low=state.reward_low,
        reward_high=state.reward_high,
    )


def learner_choose(state: LearnerState, *, epsilon: float, rng: random.Random) -> tuple[str, bool]:
    """The starting tier and whether it was an exploration (not the learner's best guess)."""
    tiers = list(state.values)
    best = max(tiers, key=lambda t: (state.values[t], -tiers.index(t)))
    if state.kind == "sla":
        pick = rng.random()
        running = 0.0
        chosen = tiers[-1]
        for tier in tiers:
            running += state.values[tier]
            if pick < running:
                chosen = tier
                break
        return chosen, chosen != best
    untried = [t for t in tiers if not state.counts.get(t)]
    if untried:
        return untried[0], True
    if rng.random() < epsilon:
        return rng.choice(tiers), True
    return best, False


def sla_beta(state: LearnerState, reward: float) -> float:
    """The reward on [0, 1] by the range the learner has seen (0 while that range is empty)."""
    low, high = state.reward_low, state.reward_high
    if low is None or high is None or high <= low:
        return 0.0
    return min(1.0, max(0.0, (reward - low) / (high - low)))


def _range_widen(state: LearnerState, reward: float) -> None:
    state.reward_low = reward if state.reward_low is None else min(state.reward_low, reward)
    state.reward_high = reward if state.reward_high is None else max(state.reward_high, reward)


def _lri_step(values: dict[str, float], tier: str, step: float) -> dict[str, float]:
    """p <- p + step * (e_tier - p), step in [0, 1]."""
    moved = {t: v + step * ((1.0 if t == tier else 0.0) - v) for t, v in values.items()}
    total = sum(moved.values())
    return {t: v / total for t, v in moved.items()}


def _lri_undo(values: dict[str, float], tier: str, step: float) -> dict[str, float]:
    """The inverse of `_lri_step`: p <- (p - step * e_tier) / (1 - step). When later updates
    left the tier less than `step`, only as much is undone as keeps it at 0 or more."""
    step = min(step, values[tier])
    if step <= 0 or step >= 1:
        return dict(values)
    undone = {t: (v - (step if t == tier else 0.0)) / (1.0 - step) for t, v in values.items()}
    undone = {t: max(0.0, v) for t, v in undone.items()}
    total = sum(undone.values())
    return {t: v / total for t, v in undone.items()}


def learner_update(
    state: LearnerState, *, tier: str, reward: float, rate: float
) -> tuple[LearnerState, float | None]:
    """The state after `tier` earned `reward`, and SLA's beta (None for Q-learning)."""
    if tier not in state.values:
        raise ValueError(f"Tier {tier!r} is not one of the learner's {', '.join(state.values)}.")
    new = LearnerState(
        kind=state.kind,
        values=dict(state.values),
        counts={**state.counts, tier: int(state.counts.get(tier, 0)) + 1},
        updates=state.updates + 1,
        reward_low=state.reward_low,
        reward_high=state.reward_high,
    )
    if state.kind == "qlearning":
        new.values[tier] += rate * (reward - new.values[tier])
        return new, None
    _range_widen(new, reward)
    beta = sla_beta(new, reward)
    new.values = _lri_step(new.values, tier, rate * beta)
    return new, beta


def learner_correct(
    state: LearnerState,
    *,
    tier: str,
    old_reward: float,
    new_reward: float,
    old_beta: float | None,
    rate: float,
) -> tuple[LearnerState, float | None]:
    """The state after an earlier reward for `tier` turned out to be `new_reward` (see module doc)."""
    if tier not in state.values:
        return state, old_beta  # the tier has left the pool: nothing of it to correct
    new = LearnerState(
        kind=state.kind,
        values=dict(state.values),
        counts=dict(state.counts),
        updates=state.updates,
        reward_low=state.reward_low,
        reward_high=state.reward_high,
    )
    if state.kind == "qlearning":
        new.values[tier] += rate * (new_reward - old_reward)
        return new, None
    _range_widen(new, new_reward)
    beta = sla_beta(new, new_reward)
    undone = _lri_undo(new.values, tier, rate * (old_beta or 0.0))
    new.values = _lri_step(undone, tier, rate * beta)
    return new, beta


# --- Question clusters (pure) ---------------------------------------------------------------


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def clusters_fit(vectors: Sequence[Sequence[float]], *, k: int, seed: int = 0) -> np.ndarray:
    """k unit-length centres of the questions' (unit) vectors: k-means, i.e. by cosine."""
    from sklearn.cluster import KMeans

    data = unit_rows(np.asarray(vectors, dtype=np.float64))
    if len(data) < 2 or k < 1:
        raise ValueError(
            f"Clustering needs at least 2 questions and k >= 1; got {len(data)}, k={k}."
        )
    k = min(k, len(data))
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(data)
    return unit_rows(model.cluster_centers_)


def cluster_assign(vector: Sequence[float] | None, centroids: np.ndarray) -> int:
    """The index of the nearest centre by cosine; GLOBAL when there is no vector or no centre."""
    if vector is None or len(vector) == 0 or len(centroids) == 0:
        return GLOBAL
    v = np.asarray(vector, dtype=np.float64)
    if v.shape[0] != centroids.shape[1]:
        return GLOBAL  # fitted with another embedder: no cluster until refitted
    return int(np.argmax(centroids @ v))
