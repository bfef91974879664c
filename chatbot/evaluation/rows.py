"""Stored evaluation rows (routing.EvaluationResult) as the replay's `QuestionRow`s: the one builder."""

from __future__ import annotations

from typing import Any

from routing.evaluation.replay import QuestionRow, TierRow
from routing.models import EvaluationResult, EvaluationRun

CASCADE = EvaluationResult.CASCADE
# Set at collection for a question the relevance floor declined: no tier ever saw it.
DECLINED = "no_passages"


def run_tier_order(*, run: EvaluationRun, present: set[str] | None = None) -> list[str]:
    """The run's evaluated tiers, cheapest first (its snapshot's order); only `present` if given."""
    snapshot = sorted(
        (t for t in (run.tiers or []) if isinstance(t, dict) and t.get("name")),
        key=lambda t: (t.get("order", 0), t.get("name")),
    )
    names = [t["name"] for t in snapshot]
    if present is None:
        return names
    return [n for n in names if n in present] + sorted(present - set(names))


def tier_row(result: EvaluationResult) -> TierRow:
    """One tier-alone result as the replay reads it."""
    error = result.error_code
    if not error and result.abstain_reason == DECLINED:
        error = DECLINED
    check_cost = float(result.check_cost)
    call_cost = float(result.call_cost)
    if not call_cost and not error and result.cost:
        # Rows stored before the answer call's cost was kept apart (older runs, demo data).
        call_cost = float(result.cost) - check_cost
    check = next((a.get("check") for a in reversed(result.attempts or []) if a.get("check")), None)
    return TierRow(
        signals=dict(result.signals or {}),
        score=float(result.score),
        # Older rows kept the "I don't know" only as the scorer's `idk` signal.
        said_dont_know=bool(result.said_dont_know or (result.signals or {}).get("idk")),
        error=error,
        f1=float(result.f1),
        exact_match=float(result.exact_match),
        call_cost=call_cost,
        check_cost=check_cost,
        latency_ms=float(result.latency_ms or 0.0),
        check_latency_ms=float(result.check_latency_ms or 0.0),
        check_key=str((check or {}).get("passage") or ""),
    )


def question_rows(
    *, run: EvaluationRun, split: str | None = None
) -> tuple[list[str], list[QuestionRow]]:
    """A run's tiers (cheapest first) and its questions answered by all of them (one split or all)."""
    results = EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE)
    if split in ("fit", "test"):
        results = results.filter(split=split)
    tiers: dict[str, dict[str, TierRow]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for result in results.order_by("question_id", "tier").iterator():
        tiers.setdefault(result.question_id, {})[result.tier] = tier_row(result)
        entry = meta.setdefault(
            result.question_id,
            {"source": result.source, "answerable": result.answerable, "split": result.split},
        )
        similarity = max(
            float(result.top_similarity or 0.0),
            float((result.signals or {}).get("top_similarity", 0.0)),
        )
        entry["top"] = max(entry.get("top", 0.0), similarity)
        if result.top_relevance is not None:
            entry["relevance"] = max(entry.get("relevance", 0.0), float(result.top_relevance))
        entry["declined"] = entry.get("declined", False) or result.abstain_reason == DECLINED
    present = {t for answers in tiers.values() for t in answers}
    order = run_tier_order(run=run, present=present)
    rows = []
    for question_id, answers in tiers.items():
        if not all(t in answers for t in order):
            continue
        entry = meta[question_id]
        top = entry["top"]
        if not top and not entry["declined"]:
            # Answered, yet no similarity recorded (synthetic rows): it passed the floor.
            top = 1.0
        rows.append(
            QuestionRow(
                question_id=question_id,
                source=entry["source"],
                answerable=entry["answerable"],
                split=entry["split"],
                top_similarity=top,
                tiers=answers,
                top_relevance=entry.get("relevance"),
            )
        )
    return order, rows
