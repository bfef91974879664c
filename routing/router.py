"""The PickLLM router, live: which tier the cascade starts on, learned per cluster of questions.

The learners and the reward are in `routing.router_learners` (pure). Here: the policy in force
(`routing.policy.router_policy`: fixed cascade, router then cascade, or a single tier), the
choice for one question (`route_choose`), what a stored answer teaches (`route_observe`), the
corrections a thumbs or an admin's label brings (`decision_accuracy_set`), and the offline
cluster refit (`clusters_refresh`, `manage.py router_clusters`).

Accuracy is the scorer's P(right) of the accepted answer (an abstention: 1 - the last score, the
chance that declining was right), replaced by the customer's thumbs (up 1, down 0) and, above
both, an admin's label. Beyond PickLLM, one learner per question cluster (k-means over the
embedder's question vectors) and a global one. Every routed customer answer trains the learners
of both kinds, its cluster's and the global ones (Q-learning is off-policy, and an LRI step only
needs the tier taken and its reward), so an admin may switch learner or scope without starting
over. The state lives in `RouterLearner` rows, changed only under the row's lock in a
transaction, so several processes never lose an update.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import IntegrityError, connection, transaction

from routing.models import ModelTier, RouterCluster, RouterDecision, RouterLearner
from routing.policy import RouterPolicy, router_policy
from routing.router_learners import (
    GLOBAL,
    KINDS,
    LearnerState,
    RewardWeights,
    attempts_cost_latency,
    cluster_assign,
    clusters_fit,
    learner_align,
    learner_choose,
    learner_correct,
    learner_new,
    learner_update,
    outcome_accuracy,
    reward_compute,
    unit_rows,
)

logger = logging.getLogger(__name__)

EXAMPLES = 3  # example questions shown per cluster


# --- Live routing (database) ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How this answer starts: the tier, whether the cascade runs on from it, who chose it."""

    start: str
    mode: str  # fixed, router, single
    learner: str = ""
    cluster: int = GLOBAL
    explored: bool = False
    vector: list[float] | None = None

    @property
    def cascade(self) -> bool:
        """True when the tiers above the start may still answer."""
        return self.mode != "single"

    @property
    def learned(self) -> bool:
        """True when the router chose: the answer's reward trains the learners."""
        return self.mode == "router"


def _centroids() -> tuple[list[int], np.ndarray]:
    rows = list(RouterCluster.objects.order_by("index").values_list("index", "centroid"))
    if not rows:
        return [], np.zeros((0, 0))
    return [i for i, _ in rows], np.asarray([c for _, c in rows], dtype=np.float64)


def question_cluster(vector: Sequence[float] | None) -> int:
    """The stored cluster a question vector belongs to (GLOBAL when none is fitted)."""
    indexes, centroids = _centroids()
    position = cluster_assign(vector, centroids)
    return GLOBAL if position == GLOBAL else indexes[position]


def _state(row: RouterLearner | None, kind: str, tiers: Sequence[str]) -> LearnerState:
    if row is None or not row.values:
        return learner_new(kind=kind, tiers=tiers)
    state = LearnerState(
        kind=kind,
        values={k: float(v) for k, v in row.values.items()},
        counts={k: int(v) for k, v in (row.counts or {}).items()},
        updates=row.updates,
        reward_low=row.reward_low,
        reward_high=row.reward_high,
    )
    return learner_align(state, tiers)


def route_choose(
    *,
    tiers: Sequence[str],
    vector: Sequence[float] | None,
    default_start: str,
    rng: random.Random | None = None,
) -> Route:
    """The starting tier for a question under the policy in force (tiers: enabled, cheapest first).

    fixed: `default_start` (the first tier when it is not enabled); single: the policy's tier
    alone (the fixed cascade, with a warning, when that tier is not enabled); router: the
    configured learner of the question's cluster (or the global one).
    """
    if not tiers:
        raise ValueError("No tier to route to.")
    policy = router_policy()
    fixed = default_start if default_start in tiers else tiers[0]
    if policy.mode == "single":
        if policy.single_tier in tiers:
            return Route(start=policy.single_tier, mode="single")
        logger.warning("single tier %r is not enabled: fixed cascade", policy.single_tier)
        return Route(start=fixed, mode="fixed")
    # Rounded: the stored copy is for clustering, where 5 decimals are plenty.
    vector_list = [round(float(x), 5) for x in vector] if vector is not None else None
    if policy.mode != "router":
        return Route(start=fixed, mode="fixed", vector=vector_list)
    cluster = question_cluster(vector_list) if policy.scope == "cluster" else GLOBAL
    row = RouterLearner.objects.filter(kind=policy.learner, cluster=cluster).first()
    state = _state(row, policy.learner, tiers)
    start, explored = learner_choose(state, epsilon=policy.epsilon, rng=rng or random.Random())
    if policy.scope == "global":
        # Still recorded with its cluster, so the cluster learners learn from it as well.
        cluster = question_cluster(vector_list)
    return Route(
        start=start,
        mode="router",
        learner=policy.learner,
        cluster=cluster,
        explored=explored,
        vector=vector_list,
    )


def _learners_locked(clusters: Iterable[int], tiers: Sequence[str] = ()) -> list[RouterLearner]:
    """The learner rows of these clusters, both kinds, locked (in id order, so two processes
    never wait on each other in a cycle); missing ones are created over `tiers` when given.
    Call inside a transaction."""
    wanted = sorted(set(clusters))
    for cluster in wanted if tiers else ():
        for kind in KINDS:
            if not RouterLearner.objects.filter(kind=kind, cluster=cluster).exists():
                try:
                    with transaction.atomic():
                        RouterLearner.objects.create(
                            kind=kind,
                            cluster=cluster,
                            values=learner_new(kind=kind, tiers=tiers).values,
                        )
                except IntegrityError:
                    pass  # another process created it first: lock theirs
    return list(
        RouterLearner.objects.select_for_update()
        .filter(cluster__in=wanted, kind__in=KINDS)
        .order_by("id")
    )


def _save_state(row: RouterLearner, state: LearnerState) -> None:
    row.values, row.counts, row.updates = state.values, state.counts, state.updates
    row.reward_low, row.reward_high = state.reward_low, state.reward_high
    row.save(
        update_fields=["values", "counts", "updates", "reward_low", "reward_high", "updated_at"]
    )


def _learner_key(row: RouterLearner) -> str:
    return f"{row.kind}:{row.cluster}"


def _policy_weights(policy: RouterPolicy) -> RewardWeights:
    return RewardWeights(policy.w_accuracy, policy.w_cost, policy.w_latency)


def route_observe(
    *,
    message_id: int,
    route: Route,
    question: str,
    attempts: Sequence[Mapping[str, Any]],
    abstained: bool,
    tiers: Sequence[str],
) -> RouterDecision | None:
    """Record a customer's answer and, when the router chose its start, train the learners.

    Call once the answer is stored, off the event loop. `attempts` are the stored attempts
    (as in Message.attempts), `tiers` the enabled tiers the router chose among. A second call
    for the same answer changes nothing. Nothing is recorded when no model ran.
    """
    if not attempts:
        return None
    policy = router_policy()
    accuracy = outcome_accuracy(attempts=attempts, abstained=abstained)
    cost, latency_ms = attempts_cost_latency(attempts)
    reward = reward_compute(
        accuracy=accuracy, cost=cost, latency_ms=latency_ms, weights=_policy_weights(policy)
    )
    with transaction.atomic():
        decision, created = RouterDecision.objects.get_or_create(
            message_id=message_id,
            defaults=dict(
                question=question,
                vector=route.vector or [],
                cluster=route.cluster,
                learner=route.learner,
                start_tier=route.start,
                explored=route.explored,
                learned=route.learned,
                score=accuracy,
                cost=Decimal(str(round(cost, 10))),
                latency_ms=latency_ms,
                reward=reward,
            ),
        )
        if not created or not route.learned or route.start not in tiers:
            return decision
        betas: dict[str, float] = {}
        for row in _learners_locked([route.cluster, GLOBAL], tiers):
            state, beta = learner_update(
                _state(row, row.kind, tiers),
                tier=route.start,
                reward=reward,
                rate=policy.learning_rate,
            )
            _save_state(row, state)
            if beta is not None:
                betas[_learner_key(row)] = beta
        decision.betas = betas
        decision.save(update_fields=["betas"])
    return decision


_UNSET: Any = object()


def decision_accuracy_set(
    *, message_id: int, thumbs: float | None = _UNSET, label: float | None = _UNSET
) -> RouterDecision | None:
    """Set a routed answer's thumbs (1 up, 0 down, None cleared) or admin label (0-1, None
    cleared), and correct the learners it trained by the change in its reward.

    None when the answer was never recorded by the router (nothing to correct).
    """
    for name, value in (("thumbs", thumbs), ("label", label)):
        if value is not _UNSET and value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"An accuracy {name} lies in [0, 1]; got {value}.")
    policy = router_policy()
    with transaction.atomic():
        decision = RouterDecision.objects.select_for_update().filter(message_id=message_id).first()
        if decision is None:
            return None
        if thumbs is not _UNSET:
            decision.thumbs = None if thumbs is None else float(thumbs)
        if label is not _UNSET:
            decision.label = None if label is None else float(label)
        accuracy = next(
            v for v in (decision.label, decision.thumbs, decision.score) if v is not None
        )
        new_reward = reward_compute(
            accuracy=accuracy,
            cost=float(decision.cost),
            latency_ms=decision.latency_ms,
            weights=_policy_weights(policy),
        )
        fields = ["thumbs", "label"]
        if decision.learned and new_reward != decision.reward:
            betas = dict(decision.betas or {})
            for row in _learners_locked([decision.cluster, GLOBAL]):
                tiers_seen = list(row.values)
                if not tiers_seen:
                    continue  # reset since: nothing of this answer is left in it
                key = _learner_key(row)
                state, beta = learner_correct(
                    _state(row, row.kind, tiers_seen),
                    tier=decision.start_tier,
                    old_reward=decision.reward,
                    new_reward=new_reward,
                    old_beta=betas.get(key),
                    rate=policy.learning_rate,
                )
                _save_state(row, state)
                if beta is not None:
                    betas[key] = beta
            decision.reward, decision.betas = new_reward, betas
            fields += ["reward", "betas"]
        decision.save(update_fields=fields)
    return decision


def router_feedback(*, message_id: int, feedback: int | None) -> RouterDecision | None:
    """A customer's thumbs (1 up, -1 down, None cleared) on a routed answer."""
    thumbs = None if feedback is None else (1.0 if feedback == 1 else 0.0)
    return decision_accuracy_set(message_id=message_id, thumbs=thumbs)


def learners_reset(*, learner_ids: Iterable[int]) -> int:
    """Forget what these learners learned (their tiers start again from scratch)."""
    count = 0
    with transaction.atomic():
        for row in RouterLearner.objects.select_for_update().filter(id__in=list(learner_ids)):
            tiers = list(row.values) or []
            row.values = learner_new(kind=row.kind, tiers=tiers).values if tiers else {}
            row.counts, row.updates, row.reward_low, row.reward_high = {}, 0, None, None
            row.save()
            count += 1
    return count


# --- Offline: refit the clusters ------------------------------------------------------------


@dataclass
class ClustersRefit:
    """What a refit did: clusters and their sizes, questions reassigned, rewards replayed."""

    clusters: list[dict[str, Any]]
    questions: int
    replayed: int


def clusters_refresh(*, k: int, seed: int = 0, limit: int = 5000) -> ClustersRefit:
    """Refit the question clusters on the latest `limit` recorded questions; start each
    cluster's learners afresh and replay into them, oldest first, the rewards of the routed
    answers now in that cluster (the global learners are left as they are). Older questions'
    vectors are dropped."""
    if not 1 <= k <= 32:
        raise ValueError(f"k is the number of clusters, 1 to 32; got {k}.")
    recent = list(
        RouterDecision.objects.exclude(vector=[])
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)[:limit]
    )
    rows = list(RouterDecision.objects.filter(id__in=recent).order_by("created_at", "id"))
    if len(rows) < max(2, k):
        raise ValueError(
            f"{len(rows)} recorded questions are too few for {k} clusters "
            "(answers are recorded as customers ask, in every policy)."
        )
    dims = {len(r.vector) for r in rows}
    if len(dims) > 1:
        # The embedder changed: only the latest embedder's vectors can be compared.
        latest = len(rows[-1].vector)
        rows = [r for r in rows if len(r.vector) == latest]
    centroids = clusters_fit([r.vector for r in rows], k=k, seed=seed)
    vectors = unit_rows(np.asarray([r.vector for r in rows], dtype=np.float64))
    similarity = vectors @ centroids.T
    assigned = similarity.argmax(axis=1)
    policy = router_policy()
    tiers = list(
        ModelTier.objects.filter(enabled=True)
        .order_by("order", "name")
        .values_list("name", flat=True)
    )
    if not tiers:
        raise ValueError("No tier is enabled: nothing to learn over.")
    with transaction.atomic():
        # Answers stored meanwhile wait for the refit (a second or so): none may create a
        # learner for an old cluster number between the delete and the replay below.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {RouterLearner._meta.db_table} IN EXCLUSIVE MODE")
        # Older questions are never read again by a refit: their vectors go (bounded storage).
        RouterDecision.objects.exclude(id__in=recent).exclude(vector=[]).update(vector=[])
        RouterCluster.objects.all().delete()
        RouterLearner.objects.exclude(cluster=GLOBAL).delete()
        summary = []
        for index, centre in enumerate(centroids):
            members = np.flatnonzero(assigned == index)
            nearest = members[np.argsort(-similarity[members, index])][:EXAMPLES]
            examples = [rows[i].question[:200] for i in nearest]
            RouterCluster.objects.create(
                index=index, centroid=centre.tolist(), size=len(members), examples=examples
            )
            summary.append({"index": index, "size": int(len(members)), "examples": examples})
        states: dict[tuple[str, int], LearnerState] = {}
        replayed = 0
        for row, cluster in zip(rows, assigned, strict=True):
            cluster = int(cluster)
            row.cluster = cluster
            betas = {k_: v for k_, v in (row.betas or {}).items() if k_.endswith(f":{GLOBAL}")}
            if row.learned and row.start_tier in tiers:
                for kind in KINDS:
                    key = (kind, cluster)
                    state = states.get(key) or learner_new(kind=kind, tiers=tiers)
                    state, beta = learner_update(
                        state, tier=row.start_tier, reward=row.reward, rate=policy.learning_rate
                    )
                    states[key] = state
                    if beta is not None:
                        betas[f"{kind}:{cluster}"] = beta
                replayed += 1
            row.betas = betas
        RouterDecision.objects.bulk_update(rows, ["cluster", "betas"])
        for (kind, cluster), state in states.items():
            RouterLearner.objects.create(
                kind=kind,
                cluster=cluster,
                values=state.values,
                counts=state.counts,
                updates=state.updates,
                reward_low=state.reward_low,
                reward_high=state.reward_high,
            )
    return ClustersRefit(clusters=summary, questions=len(rows), replayed=replayed)
