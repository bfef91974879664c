"""The one writer of a policy to the live cascade: tiers' thresholds, the relevance floor, weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from routing.models import EvaluationRun, ModelTier
from routing.policy import relevance_floor_set, scorer_weights_write


def policy_apply(
    *,
    run: EvaluationRun,
    tiers: Sequence[str],
    thresholds: Sequence[float],
    floor: float | None,
    weights: Mapping[str, float] | None = None,
    source: str = "",
    rerank_floor: float | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> list[str]:
    """Enable exactly `tiers` with these thresholds, set the floor(s) (and weights, stored as a
    new version with their calibration figures); a summary.

    The policy must come from a real run: synthetic demo data never reaches the live tiers.
    """
    if (run.settings or {}).get("demo"):
        raise ValueError(
            f"Run #{run.pk} holds synthetic demo data: its policy cannot be applied. "
            "Run manage.py evaluate on real questions first."
        )
    tiers = list(tiers)
    if not tiers or len(tiers) != len(thresholds):
        raise ValueError("A policy needs at least one tier and one threshold per tier.")
    floors = [v for v in (floor, rerank_floor) if v is not None]
    for value in [*thresholds, *floors]:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Thresholds and the floor lie in [0, 1]; got {value}.")
    source = source or f"run {run.pk}"
    with transaction.atomic():
        rows = {t.name: t for t in ModelTier.objects.select_for_update()}
        missing = [t for t in tiers if t not in rows]
        if missing:
            raise ValueError(f"Unknown tier(s): {', '.join(missing)}.")
        summary = []
        for name, tier in rows.items():
            if name in tiers:
                tier.enabled = True
                tier.threshold = float(thresholds[tiers.index(name)])
                summary.append(f"{name} ≥ {tier.threshold:.3f}")
            elif tier.enabled:
                tier.enabled = False
                summary.append(f"{name} disabled")
            tier.save(update_fields=["enabled", "threshold"])
        if floor is not None:
            relevance_floor_set(
                floor=float(floor),
                applied_from=source,
                rerank_floor=None if rerank_floor is None else float(rerank_floor),
            )
            summary.append(f"relevance floor {floor:.2f}")
            if rerank_floor:
                summary.append(f"rerank floor {rerank_floor:.2f}")
        if weights is not None:
            version = scorer_weights_write(
                weights=weights, fitted_on=source, calibration=calibration
            )
            summary.append(f"scorer weights v{version.number}")
    start = getattr(settings, "CASCADE_START_TIER", "")
    if start in tiers and tiers.index(start) > 0:
        # The cascade begins at its starting tier when that tier is enabled: cheaper ones are skipped.
        skipped = ", ".join(tiers[: tiers.index(start)])
        summary.append(
            f"warning: CASCADE_START_TIER={start} skips {skipped}; "
            f"set CASCADE_START_TIER={tiers[0]} for the cascade to follow this policy"
        )
    return summary
