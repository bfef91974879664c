"""The cascade policy in force now, as the evaluation records it and the replay reads it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from routing.cascade import tiers_from_start
from routing.evaluation.replay import Policy
from routing.models import ModelTier, ScorerWeights
from routing.policy import relevance_floor, rerank_floor
from routing.scorer import DEFAULT_WEIGHTS


def live_weights() -> dict[str, float]:
    """The scorer weights the pipeline uses now (the stored ones, else the defaults)."""
    row = ScorerWeights.objects.filter(name=settings.SCORER_WEIGHTS_NAME).first()
    return dict(row.weights) if row and row.weights else dict(DEFAULT_WEIGHTS)


def live_settings(*, tier_order: Sequence[str], stream_mode: str = "buffer") -> dict[str, Any]:
    """Everything a replay of the live cascade needs, as plain data (stored with each pass).

    `tiers` are the enabled tiers among `tier_order` from the starting tier up: the tiers a
    cascade pass runs.
    """
    rows = {t.name: t for t in ModelTier.objects.filter(name__in=list(tier_order))}
    enabled = [t for t in tier_order if t in rows and rows[t].enabled]
    return {
        "tiers": tiers_from_start(enabled, settings.CASCADE_START_TIER),
        "thresholds": {name: rows[name].threshold for name in tier_order if name in rows},
        "relevance_floor": relevance_floor(),
        "rerank": settings.RETRIEVAL_RERANK,
        "rerank_floor": rerank_floor() if settings.RETRIEVAL_RERANK else 0.0,
        "scorer_weights": live_weights(),
        # The tier asked the answerability check (False: none).
        "support_check": False
        if settings.CASCADE_SUPPORT_CHECK == "off"
        else settings.CASCADE_SUPPORT_CHECK,
        "start_tier": settings.CASCADE_START_TIER,
        "stream_mode": stream_mode,
        "answer_caps": {name: rows[name].max_answer_tokens for name in tier_order if name in rows},
    }


def policy_from_settings(recorded: Mapping[str, Any], *, label: str = "") -> Policy:
    """The policy a recorded pass ran with (see `live_settings`)."""
    tiers = tuple(recorded["tiers"])
    return Policy(
        tiers=tiers,
        thresholds=tuple(float(recorded["thresholds"][t]) for t in tiers),
        floor=float(recorded["relevance_floor"]),
        rerank_floor=float(recorded.get("rerank_floor") or 0.0),
        weights=recorded.get("scorer_weights") or None,
        support_check=bool(recorded.get("support_check", True)),
        label=label,
    )
