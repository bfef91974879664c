"""The live cascade policy an evaluation can apply: the relevance floor (tiers hold thresholds)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from routing.models import CascadePolicy

POLICY_NAME = "default"


def relevance_floor() -> float:
    """The relevance floor in force: the applied one, else CASCADE_RELEVANCE_FLOOR."""
    row = CascadePolicy.objects.filter(name=POLICY_NAME).first()
    return _floor(row)


async def arelevance_floor() -> float:
    """`relevance_floor` for async callers (the pipeline)."""
    row = await CascadePolicy.objects.filter(name=POLICY_NAME).afirst()
    return _floor(row)


def relevance_floor_set(*, floor: float, applied_from: str) -> None:
    """Store the relevance floor the cascade uses from the next question on."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"A relevance floor lies in [0, 1]; got {floor}.")
    CascadePolicy.objects.update_or_create(
        name=POLICY_NAME, defaults={"relevance_floor": floor, "applied_from": applied_from}
    )


def _floor(row: CascadePolicy | None) -> float:
    if row is not None and row.relevance_floor is not None:
        return float(row.relevance_floor)
    return float(settings.CASCADE_RELEVANCE_FLOOR)


@dataclass(frozen=True)
class RouterPolicy:
    """How the cascade's starting tier is chosen, and the router's reward and learning settings."""

    mode: str = "fixed"  # fixed, router, single
    single_tier: str = ""
    learner: str = "qlearning"  # sla, qlearning
    scope: str = "cluster"  # cluster, global
    w_accuracy: float = 1.0
    w_cost: float = 200.0
    w_latency: float = 0.05
    learning_rate: float = 0.1
    epsilon: float = 0.1


def router_policy() -> RouterPolicy:
    """The router policy in force (the defaults until an admin saves the 'default' row)."""
    row = CascadePolicy.objects.filter(name=POLICY_NAME).first()
    if row is None:
        return RouterPolicy()
    return RouterPolicy(
        mode=row.router_mode,
        single_tier=row.single_tier,
        learner=row.router_learner,
        scope=row.router_scope,
        w_accuracy=row.reward_accuracy_weight,
        w_cost=row.reward_cost_weight,
        w_latency=row.reward_latency_weight,
        learning_rate=row.router_learning_rate,
        epsilon=row.router_epsilon,
    )
