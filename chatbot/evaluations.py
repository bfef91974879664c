"""Evaluation runs as the admin sees them, and tuning the cascade from their stored rows.

Reads routing's EvaluationRun/EvaluationResult (written by `manage.py evaluate`) into
`routing.tuning` rows, so every figure here is a replay: no model is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from routing.models import ModelTier
from routing.tuning import (
    OBJECTIVES,
    PolicyPoint,
    QuestionRow,
    TierOutcome,
    best_under_budget,
    cheapest_above_target,
    complete_rows,
    pareto_frontier,
    policies_search,
    policy_replay,
    single_tier_points,
    with_min_abstention,
)

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
    start = getattr(settings, "CASCADE_START_TIER", "")
    if start in tiers and list(tiers).index(start) > 0:
        # The cascade begins at its starting tier when that tier is enabled: cheaper ones are skipped.
        skipped = ", ".join(list(tiers)[: list(tiers).index(start)])
        summary.append(
            f"warning: CASCADE_START_TIER={start} skips {skipped}; "
            f"set CASCADE_START_TIER={tiers[0]} for the cascade to follow this policy"
        )
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
    objective: str = "f1",
    min_abstention: float | None = None,
) -> dict[str, Any]:
    """Frontier, each tier alone, the current setting and the optimiser's pick, as plain data."""
    points = policies_search(rows=rows, tier_order=tier_order)
    eligible = with_min_abstention(points, min_abstention=min_abstention)
    singles = single_tier_points(rows=rows, tier_order=tier_order)
    largest = singles[-1] if singles else None
    frontier = pareto_frontier(points, objective=objective)
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
        chosen = best_under_budget(points=eligible, budget=budget, objective=objective)
    elif target_f1 is not None:
        chosen = cheapest_above_target(points=eligible, target_f1=target_f1, objective=objective)
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
        "objective": objective,
        "min_abstention": min_abstention,
        "found": chosen is not None or (budget is None and target_f1 is None),
    }


# --- Stored runs (routing's EvaluationRun / EvaluationResult) ---------------------------------

CASCADE = "cascade"
MAX_UPLOAD_BYTES = 5_000_000


def _run_tier_order(run: Any, present: set[str]) -> list[str]:
    """The run's evaluated tiers, cheapest first (its snapshot's order), that have stored rows."""
    snapshot = sorted(
        (t for t in (run.tiers or []) if isinstance(t, dict) and t.get("name") in present),
        key=lambda t: (t.get("order", 0), t.get("name")),
    )
    names = [t["name"] for t in snapshot]
    return names + sorted(present - set(names))


def _outcome(result: Any) -> TierOutcome:
    # A tier-alone row abstained by the scorer's threshold is an answer to the replay, which
    # applies thresholds itself; "no passages" and the model's own "I don't know" stay abstentions.
    low_score = result.abstain_reason == "low_score"
    grade = (result.f1 if result.answerable else 0.0) if low_score else result.grade
    return TierOutcome(
        score=float(result.score),
        grade=float(grade),
        cost=float(result.cost),
        latency_ms=float(result.latency_ms or 0.0),
        abstained=bool(result.abstained and not low_score),
    )


def _expected_rows(settings: dict[str, Any]) -> int:
    """Rows a run will hold when finished: each question per tier, plus its real-cascade subset."""
    questions = settings.get("questions") or []
    tiers = settings.get("run_tiers") or []
    return len(questions) * len(tiers) + int(settings.get("cascade_limit") or 0)


def evaluation_runs_list() -> list[dict[str, Any]]:
    """Stored runs, newest first, as plain dicts with their progress."""
    from django.db.models import Count

    from routing.models import EvaluationRun

    runs = EvaluationRun.objects.annotate(
        done=Count("results"), questions=Count("results__question_id", distinct=True)
    ).order_by("-started_at")
    return [
        {
            "id": run.id,
            "name": run.name,
            "dataset": run.dataset,
            "status": run.status,
            "created_at": run.started_at,
            "done": run.done,
            "total": _expected_rows(run.settings or {}) or run.done,
            "questions": run.questions,
            "demo": bool((run.settings or {}).get("demo")),
        }
        for run in runs
    ]


def evaluation_rows(
    *, run_id: int, split: str | None = None
) -> tuple[list[str], list[QuestionRow]] | None:
    """A run's tiers (cheapest first) and its per-question rows (one split, or all); None if no run."""
    from routing.models import EvaluationResult, EvaluationRun

    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        return None
    by_question: dict[str, dict[str, TierOutcome]] = {}
    answerable: dict[str, bool] = {}
    results = EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE)
    if split in ("fit", "test"):
        results = results.filter(split=split)
    for result in results.iterator():
        by_question.setdefault(result.question_id, {})[result.tier] = _outcome(result)
        answerable[result.question_id] = result.answerable
    present = {tier for outcomes in by_question.values() for tier in outcomes}
    tier_order = _run_tier_order(run, present)
    rows = [
        QuestionRow(question_id=q, answerable=answerable[q], outcomes=outcomes)
        for q, outcomes in sorted(by_question.items())
    ]
    return tier_order, complete_rows(rows=rows, tiers=tier_order)


def _cascade_point(run: Any) -> PolicyPoint | None:
    from routing.models import EvaluationResult

    rows = [
        QuestionRow(
            question_id=r.question_id,
            answerable=r.answerable,
            outcomes={
                CASCADE: TierOutcome(
                    score=1.0,
                    grade=float(r.grade),
                    cost=float(r.cost),
                    latency_ms=float(r.latency_ms or 0.0),
                    abstained=bool(r.abstained),
                )
            },
        )
        for r in EvaluationResult.objects.filter(run=run, tier=CASCADE).iterator()
    ]
    if not rows:
        return None
    return policy_replay(rows=rows, tiers=[CASCADE], thresholds=[0.0], label="cascade (as run)")


def evaluation_run_summary(*, run_id: int) -> dict[str, Any] | None:
    """A run's header and its table: each tier alone, the cascade as run, its thresholds replayed."""
    from routing.models import EvaluationRun

    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        return None
    tier_order, rows = evaluation_rows(run_id=run_id) or ([], [])
    singles = single_tier_points(rows=rows, tier_order=tier_order) if rows else []
    largest = singles[-1] if singles else None
    policies = [_point(p, largest) for p in singles]
    cascade = _cascade_point(run)
    if cascade:
        policies.append(_point(cascade, largest, marked=True))
    thresholds = run.thresholds or {}
    run_tiers = [t for t in tier_order if t in thresholds]
    if rows and run_tiers:
        replayed = policy_replay(
            rows=rows,
            tiers=run_tiers,
            thresholds=[float(thresholds[t]) for t in run_tiers],
            label="run's thresholds, replayed",
        )
        policies.append(_point(replayed, largest))
    info = next((r for r in evaluation_runs_list() if r["id"] == run.id), {})
    return {
        **info,
        "id": run.id,
        # The run's question list stays out: the dashboard's JSON carries this summary.
        "settings": {k: v for k, v in (run.settings or {}).items() if k != "questions"},
        "tiers_in_force": [
            {"name": t, "threshold": thresholds[t]} for t in tier_order if t in thresholds
        ],
        "policies": policies,
    }


def evaluation_latest_summary() -> dict[str, Any] | None:
    """Per tier and per policy figures of the latest run with stored rows, or None."""
    from routing.models import EvaluationRun

    with_rows = EvaluationRun.objects.filter(results__isnull=False).distinct()
    run = (
        with_rows.filter(status=EvaluationRun.Status.COMPLETE).order_by("-started_at").first()
        or with_rows.order_by("-started_at").first()
    )
    if run is None:
        return None
    return evaluation_run_summary(run_id=run.id)


def _store_jsonl(upload: Any, *, required: str) -> tuple[str, int]:
    import json
    import uuid

    if upload.size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{upload.name} is larger than {MAX_UPLOAD_BYTES // 1_000_000} MB.")
    raw = upload.read()
    try:
        lines = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{upload.name} is not JSONL: {exc}") from exc
    if not lines or not all(isinstance(x, dict) and x.get(required) for x in lines):
        raise ValueError(f'Every line of {upload.name} needs an object with "{required}".')
    folder = settings.MEDIA_ROOT / "evaluations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.jsonl"
    path.write_bytes(raw)
    return str(path), len(lines)


def evaluation_start_from_upload(*, upload: Any, limit: str | None, user: Any) -> str:
    """Check and store an uploaded questions JSONL, then queue an evaluation run on it.

    No passages upload: they would be ingested into the live help centre's knowledge.
    """
    from chatbot.dashboard_tasks import evaluation_run_task

    if upload is None:
        raise ValueError("Choose a questions file (JSONL).")
    try:
        limit_value = int(limit) if limit else None
    except ValueError as exc:
        raise ValueError("The limit must be a whole number.") from exc
    questions_path, count = _store_jsonl(upload, required="question")
    evaluation_run_task.enqueue(questions_path=questions_path, limit=limit_value)
    return (
        f"Queued an evaluation of {min(count, limit_value or count)} questions; "
        "it appears below once the worker starts it."
    )


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
        floor = float(params["min_abstention"]) if params.get("min_abstention") else None
    except ValueError:
        context["error"] = "run, budget, target_f1 and min_abstention must be numbers."
        return context
    split = params.get("split") if params.get("split") in ("fit", "test") else None
    context["split"] = split or "all"
    loaded = evaluation_rows(run_id=run_id, split=split)
    if loaded is None:
        context["error"] = f"No evaluation run {run_id}."
        return context
    tier_order, rows = loaded
    context["run_id"] = run_id
    if not rows:
        context["error"] = "This run has no complete rows to replay yet."
        return context
    objective = params.get("objective") if params.get("objective") in OBJECTIVES else "f1"
    context.update(
        tuning_from_rows(
            tier_order=tier_order,
            rows=rows,
            budget=budget,
            target_f1=target,
            objective=objective,
            min_abstention=floor,
        )
    )
    context["chart"] = {
        k: context[k]
        for k in ("frontier", "singles", "current", "chosen", "tier_order", "objective")
    }
    return context
