"""routing.router_learners: both PickLLM learners, the reward and the question clusters (pure,
seeded: the same seed gives the same choices)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from routing.models import RouterLearner
from routing.router_learners import (
    GLOBAL,
    LearnerState,
    RewardWeights,
    cluster_assign,
    clusters_fit,
    learner_align,
    learner_choose,
    learner_correct,
    learner_new,
    learner_update,
    outcome_accuracy,
    reward_compute,
)

TIERS = ["medium", "large"]


def test_the_global_learner_is_the_stored_one() -> None:
    assert GLOBAL == RouterLearner.GLOBAL


# --- Reward ---------------------------------------------------------------------------------


def test_reward_weighs_accuracy_cost_and_log_latency() -> None:
    weights = RewardWeights(accuracy=2.0, cost=100.0, latency=0.5)
    got = reward_compute(accuracy=0.8, cost=0.001, latency_ms=4000.0, weights=weights)
    assert got == pytest.approx(2.0 * 0.8 - 100.0 * 0.001 - 0.5 * math.log(4.0))
    # Slower or dearer is worse; a zero latency is floored, never log(0).
    assert reward_compute(accuracy=0.8, cost=0.002, latency_ms=4000.0, weights=weights) < got
    assert reward_compute(accuracy=0.8, cost=0.001, latency_ms=8000.0, weights=weights) < got
    assert math.isfinite(reward_compute(accuracy=1, cost=0, latency_ms=0.0, weights=weights))


def test_outcome_accuracy_is_the_accepted_score_or_the_chance_declining_was_right() -> None:
    accepted = [
        {"tier": "medium", "outcome": "low_score", "score": 0.2},
        {"tier": "large", "outcome": "accepted", "score": 0.7},
    ]
    assert outcome_accuracy(attempts=accepted, abstained=False) == pytest.approx(0.7)
    declined = [{"tier": "large", "outcome": "abstained", "score": 0.3}]
    assert outcome_accuracy(attempts=declined, abstained=True) == pytest.approx(0.7)
    failed = [{"tier": "large", "outcome": "error:timeout", "score": None}]
    assert outcome_accuracy(attempts=failed, abstained=False) == 0.0


# --- The learners -----------------------------------------------------------------------------


def bandit(kind: str, seed: int, steps: int, means: dict[str, float]) -> LearnerState:
    """Run a learner on a two-armed bandit with noisy rewards around `means`."""
    rng = random.Random(seed)
    state = learner_new(kind=kind, tiers=list(means))
    for _ in range(steps):
        tier, _explored = learner_choose(state, epsilon=0.1, rng=rng)
        state, _beta = learner_update(
            state, tier=tier, reward=means[tier] + rng.gauss(0, 0.05), rate=0.1
        )
    return state


@pytest.mark.parametrize("kind", ["sla", "qlearning"])
def test_each_learner_learns_the_better_starting_tier(kind: str) -> None:
    for means in ({"medium": 0.6, "large": 0.3}, {"medium": 0.3, "large": 0.6}):
        state = bandit(kind, seed=3, steps=400, means=means)
        best = max(means, key=means.__getitem__)
        assert max(state.values, key=state.values.__getitem__) == best, state
        if kind == "sla":
            assert sum(state.values.values()) == pytest.approx(1.0)
            assert state.values[best] > 0.9
        else:
            assert state.values[best] == pytest.approx(means[best], abs=0.05)


@pytest.mark.parametrize("kind", ["sla", "qlearning"])
def test_same_seed_same_choices_other_seed_other_choices(kind: str) -> None:
    means = {"medium": 0.5, "large": 0.45}
    a, b = bandit(kind, 11, 60, means), bandit(kind, 11, 60, means)
    assert a == b
    assert bandit(kind, 12, 60, means) != a


def test_q_learning_tries_every_tier_once_then_exploits_unless_exploring() -> None:
    state = learner_new(kind="qlearning", tiers=TIERS)
    rng = random.Random(0)
    assert learner_choose(state, epsilon=0.0, rng=rng) == ("medium", True)
    state, _ = learner_update(state, tier="medium", reward=-1.0, rate=0.5)
    assert learner_choose(state, epsilon=0.0, rng=rng) == ("large", True)
    state, _ = learner_update(state, tier="large", reward=1.0, rate=0.5)
    assert learner_choose(state, epsilon=0.0, rng=rng) == ("large", False)
    picks = [learner_choose(state, epsilon=1.0, rng=rng)[0] for _ in range(200)]
    assert 60 < picks.count("medium") < 140


def test_sla_does_not_move_before_it_knows_the_reward_range_and_stays_a_distribution() -> None:
    state = learner_new(kind="sla", tiers=TIERS)
    state, beta = learner_update(state, tier="large", reward=0.4, rate=0.2)
    assert beta == 0.0 and state.values == {"medium": 0.5, "large": 0.5}
    state, beta = learner_update(state, tier="large", reward=0.9, rate=0.2)
    assert beta == 1.0 and state.values["large"] == pytest.approx(0.6)
    state, beta = learner_update(state, tier="medium", reward=0.4, rate=0.2)
    assert beta == 0.0 and state.values["large"] == pytest.approx(0.6)  # inaction on the worst
    assert sum(state.values.values()) == pytest.approx(1.0)


def test_a_correction_is_the_update_the_new_reward_would_have_made() -> None:
    start = learner_new(kind="qlearning", tiers=TIERS)
    start, _ = learner_update(start, tier="large", reward=0.2, rate=0.3)
    given, _ = learner_update(start, tier="medium", reward=0.8, rate=0.3)
    corrected, _ = learner_correct(
        given, tier="medium", old_reward=0.8, new_reward=0.1, old_beta=None, rate=0.3
    )
    direct, _ = learner_update(start, tier="medium", reward=0.1, rate=0.3)
    assert corrected.values == pytest.approx(direct.values)
    assert corrected.counts == direct.counts  # a correction is not another observation

    sla = learner_new(kind="sla", tiers=TIERS)
    sla, _ = learner_update(sla, tier="large", reward=0.0, rate=0.3)
    sla, beta = learner_update(sla, tier="medium", reward=1.0, rate=0.3)
    assert sla.values["medium"] == pytest.approx(0.65)
    # A thumbs-down: medium's reward was really the worst seen; its gain is taken back.
    back, new_beta = learner_correct(
        sla, tier="medium", old_reward=1.0, new_reward=0.0, old_beta=beta, rate=0.3
    )
    assert new_beta == 0.0 and back.values["medium"] == pytest.approx(0.5)  # as if never given
    assert sum(back.values.values()) == pytest.approx(1.0) and min(back.values.values()) >= 0


def test_a_large_negative_correction_never_makes_a_probability_negative() -> None:
    state = LearnerState(
        kind="sla", values={"medium": 0.05, "large": 0.95}, reward_low=0, reward_high=1
    )
    moved, _ = learner_correct(
        state, tier="medium", old_reward=1.0, new_reward=0.0, old_beta=1.0, rate=1.0
    )
    assert moved.values["medium"] == pytest.approx(0.0) and moved.values["large"] == pytest.approx(
        1
    )


def test_a_tier_enabled_later_joins_each_learner() -> None:
    sla = LearnerState(kind="sla", values={"medium": 0.8, "large": 0.2})
    grown = learner_align(sla, ["small", "medium", "large"])
    assert grown.values["small"] == pytest.approx(1 / 3)
    assert grown.values["medium"] / grown.values["large"] == pytest.approx(4.0)
    assert sum(grown.values.values()) == pytest.approx(1.0)
    q = LearnerState(kind="qlearning", values={"medium": 0.4}, counts={"medium": 5})
    grown_q = learner_align(q, ["medium", "large"])
    assert grown_q.values == {"medium": 0.4, "large": 0.0}
    assert learner_choose(grown_q, epsilon=0.0, rng=random.Random(0)) == ("large", True)


def test_bad_learner_input_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="sla, qlearning"):
        learner_new(kind="ucb", tiers=TIERS)
    with pytest.raises(ValueError, match="not one of"):
        learner_update(learner_new(kind="sla", tiers=TIERS), tier="small", reward=1, rate=0.1)


# --- Clusters -------------------------------------------------------------------------------


def groups(seed: int = 0, per: int = 20, dims: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Three tight groups of vectors around random directions, and each vector's group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dims))
    labels = np.repeat(np.arange(3), per)
    return centres[labels] + rng.normal(scale=0.05, size=(3 * per, dims)), labels


def test_clusters_fit_finds_the_groups_and_assign_follows_them() -> None:
    vectors, labels = groups()
    centroids = clusters_fit(vectors, k=3, seed=0)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
    assigned = np.array([cluster_assign(v, centroids) for v in vectors])
    # Same partition as the groups (cluster numbers are arbitrary).
    for group in range(3):
        assert len(set(assigned[labels == group])) == 1
    assert len(set(assigned)) == 3
    assert cluster_assign(None, centroids) == GLOBAL
    assert cluster_assign([1.0, 0.0], centroids) == GLOBAL  # another embedder's size
