"""Evaluation runs as the admin sees them, and tuning the cascade from their stored rows.

Every figure is a replay of stored rows (`routing.evaluation`): no model is called. Fitting and
reporting never share questions: the tuning page searches on a run's fit split and shows the
figures on its test split, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from chatbot.evaluation.apply import policy_apply
from chatbot.evaluation.live import live_settings, live_weights, policy_from_settings
from chatbot.evaluation.report import cascade_figures
from chatbot.evaluation.rows import question_rows
from routing.evaluation.calibration import reliability_png
from routing.evaluation.replay import (
    Policy,
    QuestionRow,
    Summary,
    policy_summary,
    tiers_alone_summaries,
)
from routing.evaluation.search import Goal, floors_to_try, policies_search
from routing.models import EvaluationRun
from routing.policy import relevance_floor

MAX_UPLOAD_BYTES = 5_000_000
# What `manage.py evaluate` reads from every question line.
REQUIRED_FIELDS = ("id", "question", "answerable")

# --- Applying a policy -----------------------------------------------------------------------


def policy_apply_from_post(*, post: Mapping[str, str]) -> str:
    """Apply the policy a form posted (run, tiers, thresholds, floor); a message for the admin."""
    try:
        run_id = int(post.get("run", ""))
    except ValueError as exc:
        raise ValueError("Apply a policy from an evaluation run (no run given).") from exc
    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        raise ValueError(f"No evaluation run {run_id}.")
    tiers = [t.strip() for t in post.get("tiers", "").split(",") if t.strip()]
    try:
        thresholds = [float(v) for v in post.get("thresholds", "").split(",") if v.strip()]
        floor = float(post["floor"]) if post.get("floor", "").strip() else None
    except ValueError as exc:
        raise ValueError("Thresholds and the floor must be numbers.") from exc
    summary = policy_apply(
        run=run, tiers=tiers, thresholds=thresholds, floor=floor, source=f"run {run.pk}, page"
    )
    return "Applied: " + "; ".join(summary) + ". The next question follows it."


def current_policy(*, tier_order: list[str]) -> Policy | None:
    """The live cascade (enabled tiers from the start tier, thresholds, floor, weights), or None."""
    recorded = live_settings(tier_order=tier_order)
    if not recorded["tiers"]:
        return None
    return policy_from_settings(recorded, label="current setting")


# --- Figures -----------------------------------------------------------------------------------


def _point(summary: Summary, **extra: Any) -> dict[str, Any]:
    data = summary.as_dict()
    data.update(extra)
    return data


def _singles(
    *, rows: list[QuestionRow], tier_order: list[str], floor: float, weights: Mapping | None
) -> tuple[Summary | None, list[Summary]]:
    """Each tier alone (threshold 0) and the largest one as the reference."""
    if not rows or not tier_order:
        return None, []
    singles = tiers_alone_summaries(rows=rows, tier_order=tier_order, floor=floor, weights=weights)
    return singles[-1], singles


# --- Stored runs (routing's EvaluationRun / EvaluationResult) ---------------------------------


def _expected_rows(run_settings: dict[str, Any]) -> int:
    """Rows a run will hold when finished: each question per tier, plus its real-cascade subset."""
    questions = run_settings.get("questions") or []
    tiers = run_settings.get("run_tiers") or []
    return len(questions) * len(tiers) + int(run_settings.get("cascade_limit") or 0)


def evaluation_runs_list() -> list[dict[str, Any]]:
    """Stored runs, newest first, as plain dicts with their progress."""
    from django.db.models import Count

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


def evaluation_run_summary(*, run_id: int) -> dict[str, Any] | None:
    """A run's header and its test-split table: tiers alone, the cascade as run, replayed thresholds."""
    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        return None
    tier_order, rows = question_rows(run=run, split="test")
    floor = float((run.settings or {}).get("relevance_floor", 0.0))
    weights = run.scorer_weights or None
    reference, singles = _singles(rows=rows, tier_order=tier_order, floor=floor, weights=weights)
    policies = [_point(s) for s in singles]
    real = cascade_figures(run=run)
    if real:
        if reference is not None and reference.mean_cost:
            real["cost_vs_reference"] = real["mean_cost"] / reference.mean_cost
        policies.append(real)
    thresholds = run.thresholds or {}
    recorded = (run.settings or {}).get("passes", {}).get("cascade")
    if rows and recorded:
        policy = policy_from_settings(recorded, label="the cascade pass's policy, replayed")
        policies.append(_point(policy_summary(rows=rows, policy=policy, reference=reference)))
    elif rows and all(t in thresholds for t in tier_order):
        policy = Policy(
            tiers=tuple(tier_order),
            thresholds=tuple(float(thresholds[t]) for t in tier_order),
            floor=floor,
            weights=weights,
            label="run's thresholds, replayed",
        )
        policies.append(_point(policy_summary(rows=rows, policy=policy, reference=reference)))
    info = next((r for r in evaluation_runs_list() if r["id"] == run.id), {})
    return {
        **info,
        "id": run.id,
        "split": "test",
        "test_questions": len(rows),
        # The run's question list stays out: the dashboard's JSON carries this summary.
        "settings": {k: v for k, v in (run.settings or {}).items() if k != "questions"},
        "tiers_in_force": [
            {"name": t, "threshold": thresholds[t]} for t in tier_order if t in thresholds
        ],
        "policies": policies,
    }


def evaluation_latest_summary() -> dict[str, Any] | None:
    """Per tier and per policy figures of the latest run with stored rows, or None."""
    with_rows = EvaluationRun.objects.filter(results__isnull=False).distinct()
    run = (
        with_rows.filter(status=EvaluationRun.Status.COMPLETE).order_by("-started_at").first()
        or with_rows.order_by("-started_at").first()
    )
    if run is None:
        return None
    return evaluation_run_summary(run_id=run.id)


def _store_jsonl(upload: Any) -> tuple[str, int]:
    import json
    import uuid

    if upload.size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{upload.name} is larger than {MAX_UPLOAD_BYTES // 1_000_000} MB.")
    raw = upload.read()
    try:
        lines = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{upload.name} is not JSONL: {exc}") from exc
    if not lines or not all(
        isinstance(x, dict) and all(k in x for k in REQUIRED_FIELDS) and x.get("question")
        for x in lines
    ):
        fields = ", ".join(f'"{k}"' for k in REQUIRED_FIELDS)
        raise ValueError(f"Every line of {upload.name} needs an object with {fields}.")
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
    questions_path, count = _store_jsonl(upload)
    evaluation_run_task.enqueue(questions_path=questions_path, limit=limit_value)
    return (
        f"Queued an evaluation of {min(count, limit_value or count)} questions; "
        "it appears below once the worker starts it."
    )


def labelled_count() -> int:
    """Distinct questions among the answers admins labelled (the shop's own evaluation set)."""
    from chatbot.evaluation.labelled import labelled_questions

    return len(labelled_questions())


def evaluation_start_labelled() -> str:
    """Write the labelled answers as a questions file and queue an evaluation run on it."""
    from chatbot.dashboard_tasks import evaluation_run_task
    from chatbot.evaluation.labelled import labelled_dataset_write

    questions_path, count = labelled_dataset_write()
    evaluation_run_task.enqueue(questions_path=questions_path)
    return (
        f"Queued an evaluation of {count} labelled questions; "
        "it appears below once the worker starts it, and the tuning page can then use it."
    )


# --- Tuning ------------------------------------------------------------------------------------


def tuning_from_run(
    *,
    run: EvaluationRun,
    goal: Goal,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Search on the run's fit split, figures on its test split: the one search, as plain data.

    Thresholds are searched under the live scorer weights unless `weights` is given (the
    thresholds must match the scores the live cascade will compute).
    """
    tier_order, fit_rows = question_rows(run=run, split="fit")
    test_order, test_rows = question_rows(run=run, split="test")
    out: dict[str, Any] = {
        "chosen_on": "fit",
        "reported_on": "test",
        "fit_questions": len(fit_rows),
        "test_questions": len(test_rows),
        "questions": len(test_rows),
        "tier_order": tier_order,
        "demo": bool((run.settings or {}).get("demo")),
    }
    if not fit_rows or not test_rows or tier_order != test_order:
        out["error"] = (
            "This run needs questions answered by every tier on both its fit and test splits: "
            "the fit split chooses, the test split reports."
        )
        return out
    weights = dict(weights) if weights is not None else live_weights()
    support_check = settings.CASCADE_SUPPORT_CHECK != "off"
    live_floor = relevance_floor()
    collected = float((run.settings or {}).get("relevance_floor", 0.0))
    result = policies_search(
        rows=fit_rows,
        tier_order=tier_order,
        goal=goal,
        weights=weights,
        support_check=support_check,
        floors=floors_to_try(collected=collected),
        reference_floor=max(live_floor, collected),
    )
    reference, singles = _singles(
        rows=test_rows, tier_order=tier_order, floor=max(live_floor, collected), weights=weights
    )

    def on_test(summary: Summary, **extra: Any) -> dict[str, Any]:
        policy = Policy(
            tiers=summary.policy.tiers,
            thresholds=summary.policy.thresholds,
            floor=summary.policy.floor,
            weights=weights,
            support_check=support_check,
            label=summary.policy.label,
        )
        return _point(policy_summary(rows=test_rows, policy=policy, reference=reference), **extra)

    current = current_policy(tier_order=tier_order)
    current_point = (
        _point(policy_summary(rows=test_rows, policy=current, reference=reference), marked=True)
        if current is not None
        else None
    )
    chosen = on_test(result.chosen) if result.chosen is not None else None
    if chosen is not None:
        chosen["label"] = "optimiser's choice: " + chosen["label"]
        chosen["fit_split"] = _point(result.chosen)
    table = [_point(s) for s in singles]
    if current_point:
        table.append(current_point)
    if chosen:
        table.append(chosen)
    out.update(
        {
            "table": table,
            "policies_tried": len(result.points),
            "frontier": [on_test(p) for p in result.frontier],
            "singles": [_point(s) for s in singles],
            "current": current_point,
            "chosen": chosen,
            "found": chosen is not None,
            "objective": "answerable_f1",
        }
    )
    return out


def _number(params: Mapping[str, str], key: str) -> float | None:
    return float(params[key]) if params.get(key) else None


def tuning_context(*, params: Mapping[str, str]) -> dict[str, Any]:
    """Everything the tuning page shows for the chosen run and optimiser request."""
    runs = evaluation_runs_list()
    context: dict[str, Any] = {"runs": runs, "run_id": None, "chart": None, "error": ""}
    if not runs:
        context["error"] = "No evaluation run stored yet: run manage.py evaluate first."
        return context
    # A real run by default: the synthetic demo run is shown only when asked for.
    default = next((r["id"] for r in runs if not r["demo"]), runs[0]["id"])
    try:
        run_id = int(params.get("run") or default)
        budget = _number(params, "budget")
        target = _number(params, "target_f1")
        min_near_miss = _number(params, "min_abstention")
    except ValueError:
        context["error"] = "run, budget, target_f1 and min_abstention must be numbers."
        return context
    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        context["error"] = f"No evaluation run {run_id}."
        return context
    context.update(run_id=run_id, budget=budget, target_f1=target, min_abstention=min_near_miss)
    asked = budget is not None or target is not None
    goal = (
        Goal(
            max_cost_ratio=None,
            max_f1_loss=None,
            min_near_miss_abstention=min_near_miss,
            budget=budget,
            target_f1=target,
        )
        if asked
        else Goal(min_near_miss_abstention=min_near_miss)
    )
    context["asked"] = asked
    tuned = tuning_from_run(run=run, goal=goal)
    context.update({k: v for k, v in tuned.items() if k != "error"})
    if tuned.get("error"):
        context["error"] = tuned["error"]
        return context
    context["chart"] = {
        k: context[k]
        for k in ("frontier", "singles", "current", "chosen", "tier_order", "objective")
    }
    context["calibration"] = run_calibration(run)
    return context


def run_calibration(run: EvaluationRun) -> dict[str, Any] | None:
    """The fit's calibration figures on the run's test rows (None until the run was fitted)."""
    return ((run.settings or {}).get("fit") or {}).get("calibration") or None


def reliability_diagram(*, run_id: int) -> bytes | None:
    """The reliability diagram (PNG) of a fitted run: the run's weights against the fitted ones."""
    run = EvaluationRun.objects.filter(id=run_id).first()
    calibration = run_calibration(run) if run else None
    if not calibration:
        return None
    return reliability_png(
        {
            "before the fit (the run's weights)": calibration["before"],
            "after the fit": calibration["after"],
        },
        title=f"Run #{run_id}: scorer's P(right) on {calibration['before']['rows']} test answers",
    )
