"""Evaluation runs as the admin sees them, and tuning the cascade from their stored rows.

Reads routing's EvaluationRun/EvaluationResult (written by `manage.py evaluate`) into
`routing.tuning` rows, so every figure here is a replay: no model is called. Until those
models exist the pages say so instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction

from routing.models import ModelTier
from routing.tuning import (
    PolicyPoint,
    QuestionRow,
    best_under_budget,
    cheapest_above_target,
    pareto_frontier,
    policies_search,
    policy_replay,
    single_tier_points,
)


def _models() -> tuple[Any, Any] | None:
    try:
        from routing.models import EvaluationResult, EvaluationRun  # type: ignore[attr-defined]
    except ImportError:
        return None
    return EvaluationRun, EvaluationResult


# --- Applying a policy -----------------------------------------------------------------------


def tiers_apply_policy(*, tiers: Sequence[str], thresholds: Sequence[float]) -> list[str]:
    """Enable exactly `tiers` with these thresholds and disable the other tiers; returns a summary."""
    if not tiers or len(tiers) != len(thresholds):
        raise ValueError("A policy needs at least one tier and one threshold per tier.")
    for value in thresholds:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Thresholds lie in [0, 1]; got {value}.")
    with transaction.atomic():
        rows = {t.name: t for t in ModelTier.objects.select_for_update()}
        missing = [t for t in tiers if t not in rows]
        if missing:
            raise ValueError(f"Unknown tier(s): {', '.join(missing)}.")
        summary = []
        for name, tier in rows.items():
            if name in tiers:
                tier.enabled = True
                tier.threshold = float(thresholds[list(tiers).index(name)])
                summary.append(f"{name} ≥ {tier.threshold:.3f}")
            elif tier.enabled:
                tier.enabled = False
                summary.append(f"{name} disabled")
            tier.save(update_fields=["enabled", "threshold"])
    return summary


def policy_apply_from_post(*, post: Mapping[str, str]) -> str:
    """Apply the policy a form posted (tiers and thresholds comma-separated); a message for the admin."""
    tiers = [t.strip() for t in post.get("tiers", "").split(",") if t.strip()]
    try:
        thresholds = [float(v) for v in post.get("thresholds", "").split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError("Thresholds must be numbers.") from exc
    summary = tiers_apply_policy(tiers=tiers, thresholds=thresholds)
    return "Applied: " + "; ".join(summary) + ". The next question follows it."


def current_policy(*, tier_order: Sequence[str]) -> tuple[list[str], list[float]]:
    """The enabled tiers (among those evaluated), cheapest first, and their thresholds."""
    tiers = ModelTier.objects.filter(enabled=True, name__in=list(tier_order)).order_by("order")
    return [t.name for t in tiers], [t.threshold for t in tiers]


# --- Tuning from rows (pure apart from reading the current tiers) -----------------------------


def _point(point: PolicyPoint, largest: PolicyPoint | None, **extra: Any) -> dict[str, Any]:
    data = point.as_dict()
    data["label"] = point.label or " → ".join(
        f"{t} ≥ {th:.2f}" for t, th in zip(point.tiers, point.thresholds, strict=True)
    )
    data["cost_vs_largest"] = (
        point.mean_cost / largest.mean_cost if largest and largest.mean_cost else None
    )
    data["f1_vs_largest"] = point.f1 / largest.f1 if largest and largest.f1 else None
    data.update(extra)
    return data


def tuning_from_rows(
    *,
    tier_order: Sequence[str],
    rows: Sequence[QuestionRow],
    budget: float | None = None,
    target_f1: float | None = None,
) -> dict[str, Any]:
    """Frontier, each tier alone, the current setting and the optimiser's pick, as plain data."""
    points = policies_search(rows=rows, tier_order=tier_order)
    singles = single_tier_points(rows=rows, tier_order=tier_order)
    largest = singles[-1] if singles else None
    frontier = pareto_frontier(points)
    current_tiers, current_thresholds = current_policy(tier_order=tier_order)
    current = (
        policy_replay(
            rows=rows,
            tiers=current_tiers,
            thresholds=current_thresholds,
            label="current setting",
        )
        if current_tiers
        else None
    )
    chosen = None
    if budget is not None:
        chosen = best_under_budget(points=points, budget=budget)
    elif target_f1 is not None:
        chosen = cheapest_above_target(points=points, target_f1=target_f1)
    table = [_point(p, largest) for p in singles]
    if current:
        table.append(_point(current, largest, marked=True))
    if chosen:
        table.append(
            _point(chosen, largest, label="optimiser's choice: " + _point(chosen, None)["label"])
        )
    return {
        "table": table,
        "tier_order": list(tier_order),
        "questions": len(rows),
        "policies_tried": len(points),
        "frontier": [_point(p, largest) for p in frontier],
        "singles": [_point(p, largest) for p in singles],
        "current": _point(current, largest) if current else None,
        "chosen": _point(chosen, largest) if chosen else None,
        "budget": budget,
        "target_f1": target_f1,
        "found": chosen is not None or (budget is None and target_f1 is None),
    }


# --- Stored runs (routing's models, once they exist) ------------------------------------------


def evaluation_runs_list() -> list[dict[str, Any]]:
    """Stored runs, newest first, as plain dicts."""
    return []


def evaluation_rows(*, run_id: int) -> tuple[list[str], list[QuestionRow]] | None:
    """A run's tiers (cheapest first) and its per-question rows; None when there is no such run."""
    return None


def evaluation_run_summary(*, run_id: int) -> dict[str, Any] | None:
    """A run's header and per tier and per policy table; None when there is no such run."""
    return None


def evaluation_latest_summary() -> dict[str, Any] | None:
    """Per tier and per policy figures of the latest finished evaluation run, or None."""
    return None


def evaluation_start_from_upload(*, upload: Any, limit: str | None, user: Any) -> str:
    """Store an uploaded JSONL dataset and queue an evaluation run on it."""
    raise ValueError("Evaluation runs are not available yet (the cascade's models are missing).")


def tuning_context(*, params: Mapping[str, str]) -> dict[str, Any]:
    """Everything the tuning page shows for the chosen run and optimiser request."""
    runs = evaluation_runs_list()
    context: dict[str, Any] = {"runs": runs, "run_id": None, "chart": None, "error": ""}
    if not runs:
        context["error"] = "No evaluation run stored yet: run manage.py evaluate first."
        return context
    try:
        run_id = int(params.get("run") or runs[0]["id"])
        budget = float(params["budget"]) if params.get("budget") else None
        target = float(params["target_f1"]) if params.get("target_f1") else None
    except ValueError:
        context["error"] = "run, budget and target_f1 must be numbers."
        return context
    loaded = evaluation_rows(run_id=run_id)
    if loaded is None:
        context["error"] = f"No evaluation run {run_id}."
        return context
    tier_order, rows = loaded
    context["run_id"] = run_id
    if not rows:
        context["error"] = "This run has no complete rows to replay yet."
        return context
    context.update(
        tuning_from_rows(tier_order=tier_order, rows=rows, budget=budget, target_f1=target)
    )
    context["chart"] = {
        k: context[k] for k in ("frontier", "singles", "current", "chosen", "tier_order")
    }
    return context
