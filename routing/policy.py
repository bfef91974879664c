"""The live cascade policy an evaluation can apply: the relevance floors (tiers hold thresholds)
and the scorer's weights, versioned so a bad fit can be rolled back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from routing.models import CascadePolicy, ScorerWeights, ScorerWeightsVersion

POLICY_NAME = "default"


def relevance_floor() -> float:
    """The relevance floor in force: the applied one, else CASCADE_RELEVANCE_FLOOR."""
    row = CascadePolicy.objects.filter(name=POLICY_NAME).first()
    return _floor(row)


def rerank_floor() -> float:
    """The cross-encoder relevance floor in force (used only when retrieval reranks)."""
    return _rerank_floor(CascadePolicy.objects.filter(name=POLICY_NAME).first())


async def arelevance_floors() -> tuple[float, float]:
    """(cosine floor, cross-encoder relevance floor) in force, for async callers (the pipeline)."""
    row = await CascadePolicy.objects.filter(name=POLICY_NAME).afirst()
    return _floor(row), _rerank_floor(row)


def relevance_floor_set(
    *, floor: float, applied_from: str, rerank_floor: float | None = None
) -> None:
    """Store the relevance floor(s) the cascade uses from the next question on."""
    for value in (floor, rerank_floor):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"A relevance floor lies in [0, 1]; got {value}.")
    defaults = {"relevance_floor": floor, "applied_from": applied_from}
    if rerank_floor is not None:
        defaults["rerank_floor"] = rerank_floor
    CascadePolicy.objects.update_or_create(name=POLICY_NAME, defaults=defaults)


def _floor(row: CascadePolicy | None) -> float:
    if row is not None and row.relevance_floor is not None:
        return float(row.relevance_floor)
    return float(settings.CASCADE_RELEVANCE_FLOOR)


def _rerank_floor(row: CascadePolicy | None) -> float:
    if row is not None and row.rerank_floor is not None:
        return float(row.rerank_floor)
    return float(settings.CASCADE_RERANK_FLOOR)


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


def scorer_weights_write(
    *,
    weights: Mapping[str, float],
    fitted_on: str,
    calibration: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ScorerWeightsVersion:
    """Store weights as the scorer's new version and make them the live ones (one transaction;
    the row lock serialises concurrent writers, so version numbers never collide)."""
    name = name or settings.SCORER_WEIGHTS_NAME
    with transaction.atomic():
        scorer, _ = ScorerWeights.objects.select_for_update().get_or_create(name=name)
        number = (scorer.versions.aggregate(top=Max("number"))["top"] or 0) + 1
        version = ScorerWeightsVersion.objects.create(
            scorer=scorer,
            number=number,
            weights=dict(weights),
            fitted_on=fitted_on,
            calibration=dict(calibration or {}),
        )
        scorer.weights, scorer.fitted_on, scorer.version = dict(weights), fitted_on, number
        scorer.save(update_fields=["weights", "fitted_on", "version", "updated_at"])
    return version


def scorer_weights_rollback(*, number: int, name: str | None = None) -> ScorerWeightsVersion:
    """Make an earlier version's weights live again, written as a new version (the history
    keeps what was rolled back from)."""
    name = name or settings.SCORER_WEIGHTS_NAME
    old = ScorerWeightsVersion.objects.filter(scorer__name=name, number=number).first()
    if old is None:
        raise ValueError(f"Scorer {name!r} has no version {number}.")
    return scorer_weights_write(
        weights=old.weights,
        fitted_on=f"rolled back to v{number} ({old.fitted_on})"[:200],
        calibration=old.calibration,
        name=name,
    )
