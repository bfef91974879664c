"""routing.router: both PickLLM learners, the reward, question clusters, and the stored state
(persistence, corrections from thumbs, safe concurrent updates, the offline cluster refit)."""

from __future__ import annotations

import io
import json
import math
import random
import threading

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from routing.models import CascadePolicy, ModelTier, RouterCluster, RouterDecision, RouterLearner
from routing.router import (
    GLOBAL,
    LearnerState,
    RewardWeights,
    Route,
    cluster_assign,
    clusters_fit,
    clusters_refresh,
    learner_align,
    learner_choose,
    learner_correct,
    learner_new,
    learner_update,
    learners_reset,
    outcome_accuracy,
    reward_compute,
    route_choose,
    route_observe,
    router_feedback,
)

TIERS = ["medium", "large"]


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


# --- Stored state -----------------------------------------------------------------------------


@pytest.fixture
def tiers(db) -> list[str]:  # noqa: ANN001
    for order, name in enumerate(TIERS):
        ModelTier.objects.update_or_create(
            name=name,
            defaults=dict(base_url="http://127.0.0.1:9/v1", model=name, order=order, enabled=True),
        )
    return list(TIERS)


def policy(**fields: object) -> None:
    CascadePolicy.objects.update_or_create(name="default", defaults=fields)


def attempts(tier: str, score: float, cost: float = 0.001, latency_ms: float = 1000.0) -> list:
    return [
        {
            "tier": tier,
            "outcome": "accepted",
            "score": score,
            "cost": cost,
            "latency_ms": latency_ms,
        }
    ]


def observe(message_id: int, route: Route, score: float = 0.8) -> RouterDecision | None:
    return route_observe(
        message_id=message_id,
        route=route,
        question=f"question {message_id}",
        attempts=attempts(route.start, score),
        abstained=False,
        tiers=TIERS,
    )


def test_fixed_and_single_policies_choose_without_learning(tiers: list[str]) -> None:
    route = route_choose(tiers=tiers, vector=[0.1, 0.2], default_start="medium")
    assert (route.start, route.mode, route.cascade, route.learned) == (
        "medium",
        "fixed",
        True,
        False,
    )
    assert route_choose(tiers=tiers, vector=None, default_start="gone").start == "medium"
    decision = observe(1, route)
    assert decision is not None and not decision.learned and decision.vector == [0.1, 0.2]
    assert not RouterLearner.objects.exists()
    policy(router_mode="single", single_tier="large")
    route = route_choose(tiers=tiers, vector=None, default_start="medium")
    assert (route.start, route.cascade) == ("large", False)
    policy(router_mode="single", single_tier="disabled-one")
    assert route_choose(tiers=tiers, vector=None, default_start="medium").mode == "fixed"


def test_router_state_survives_a_restart_and_steers_the_next_choice(tiers: list[str]) -> None:
    policy(
        router_mode="router", router_learner="qlearning", router_scope="global", router_epsilon=0.0
    )
    rewards = {"medium": 0.9, "large": 0.1}
    for message_id in range(1, 9):
        route = route_choose(tiers=tiers, vector=None, default_start="medium", rng=random.Random(0))
        observe(message_id, route, score=rewards[route.start])
    # Nothing is held in memory: a fresh read of the rows decides.
    row = RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL)
    assert row.updates == 8 and row.values["medium"] > row.values["large"]
    assert RouterLearner.objects.get(kind="sla", cluster=GLOBAL).updates == 8  # both kinds learn
    route = route_choose(tiers=tiers, vector=None, default_start="large", rng=random.Random(1))
    assert (route.start, route.explored, route.learner) == ("medium", False, "qlearning")
    # The same answer stored twice trains once.
    first = RouterDecision.objects.get(message_id=8)
    again = observe(8, Route(start="large", mode="router", learner="qlearning"), score=0.0)
    assert again is not None and (again.id, again.reward) == (first.id, first.reward)
    assert RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).updates == 8


def test_nothing_is_recorded_when_no_model_ran(tiers: list[str]) -> None:
    route = Route(start="medium", mode="router", learner="sla")
    assert (
        route_observe(
            message_id=5, route=route, question="q", attempts=[], abstained=True, tiers=TIERS
        )
        is None
    )
    assert not RouterDecision.objects.exists() and not RouterLearner.objects.exists()


def test_a_thumbs_down_corrects_the_reward_the_learners_were_given(tiers: list[str]) -> None:
    policy(router_mode="router", router_learning_rate=0.5)
    route = Route(start="large", mode="router", learner="qlearning")
    decision = observe(7, route, score=0.9)
    assert decision is not None
    q_before = RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).values["large"]
    down = router_feedback(message_id=7, feedback=-1)
    assert (
        down is not None
        and down.thumbs == 0.0
        and down.reward == pytest.approx(decision.reward - 0.9)
    )
    q_after = RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).values["large"]
    assert q_after == pytest.approx(q_before - 0.5 * 0.9)
    # Cleared: back to the scorer's accuracy and the reward first given.
    cleared = router_feedback(message_id=7, feedback=None)
    assert cleared is not None and cleared.reward == pytest.approx(decision.reward)
    assert RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).values[
        "large"
    ] == pytest.approx(q_before)
    assert router_feedback(message_id=999, feedback=1) is None  # never routed: nothing to do


def test_reset_forgets_what_a_learner_learned(tiers: list[str]) -> None:
    policy(router_mode="router")
    observe(1, Route(start="large", mode="router", learner="sla"))
    ids = RouterLearner.objects.values_list("id", flat=True)
    assert learners_reset(learner_ids=ids) == 2
    for row in RouterLearner.objects.all():
        assert row.updates == 0 and set(row.values) == set(TIERS)
        assert len(set(row.values.values())) == 1  # uniform, or all zero


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_from_several_connections_lose_none() -> None:
    for order, name in enumerate(TIERS):
        ModelTier.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", model=name, order=order
        )
    policy(router_mode="router", router_learning_rate=0.2)
    threads, per_thread = 6, 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                observe(worker * 100 + i, Route(start="large", mode="router", learner="sla"), 0.5)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not errors, errors
    total = threads * per_thread
    assert RouterDecision.objects.count() == total
    q = RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL)
    assert q.updates == total and q.counts["large"] == total
    reward = RouterDecision.objects.first().reward
    # Every update of the same reward, in any order: Q = r + (1 - a)^n (Q0 - r), Q0 = 0.
    assert q.values["large"] == pytest.approx(reward * (1 - 0.8**total))
    assert RouterLearner.objects.get(kind="sla", cluster=GLOBAL).updates == total


def test_cluster_refit_reassigns_questions_and_replays_their_rewards(tiers: list[str]) -> None:
    policy(router_mode="router", router_scope="cluster", router_epsilon=0.0)
    vectors, labels = groups(seed=1, per=6)
    # Group 0's questions are easy (medium does well), the others' hard (large does).
    for message_id, (vector, label) in enumerate(zip(vectors, labels, strict=True), start=1):
        for start in TIERS:
            good = (start == "medium") == (label == 0)
            route = Route(start=start, mode="router", learner="qlearning", vector=list(vector))
            observe(message_id * 10 + TIERS.index(start), route, score=0.9 if good else 0.1)
    refit = clusters_refresh(k=3, seed=0)
    assert refit.questions == len(vectors) * 2 and refit.replayed == refit.questions
    assert sorted(c["size"] for c in refit.clusters) == [12, 12, 12]
    assert all(len(c["examples"]) == 3 for c in refit.clusters)
    easy = route_choose(tiers=TIERS, vector=list(vectors[0]), default_start="large")
    hard = route_choose(tiers=TIERS, vector=list(vectors[-1]), default_start="medium")
    assert (easy.start, hard.start) == ("medium", "large")
    assert easy.cluster != hard.cluster and easy.cluster >= 0
    assert RouterCluster.objects.count() == 3
    # The global learner saw every question and was left as it was.
    assert RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).updates == refit.questions


def test_the_refit_command_refuses_too_few_questions_and_keeps_only_recent_vectors(
    tiers: list[str],
) -> None:
    with pytest.raises(CommandError, match="too few"):
        call_command("router_clusters", k=4, stdout=io.StringIO())
    vectors, _labels = groups(seed=2, per=4)
    for message_id, vector in enumerate(vectors, start=1):
        observe(message_id, Route(start="medium", mode="fixed", vector=list(vector)))
    out = io.StringIO()
    call_command("router_clusters", k=2, limit=8, stdout=out)
    report = json.loads(out.getvalue())
    assert report["questions"] == 8 and report["replayed"] == 0  # fixed policy: none learned
    assert sum(c["size"] for c in report["clusters"]) == 8
    assert RouterDecision.objects.exclude(vector=[]).count() == 8
    assert set(
        RouterDecision.objects.exclude(vector=[]).values_list("message_id", flat=True)
    ) == set(range(len(vectors) - 7, len(vectors) + 1))
