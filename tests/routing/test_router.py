"""routing.router: the stored state (persistence, corrections from thumbs, safe concurrent
updates, the offline cluster refit) and the policy's choice of starting tier."""

from __future__ import annotations

import io
import json
import random
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from routing.models import CascadePolicy, ModelTier, RouterCluster, RouterDecision, RouterLearner
from routing.router import (
    GLOBAL,
    Route,
    clusters_refresh,
    learners_reset,
    route_choose,
    route_observe,
    router_feedback,
)
from tests.routing.test_router_learners import groups

TIERS = ["medium", "large"]


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
