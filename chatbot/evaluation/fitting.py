"""Choose scorer weights, thresholds and the relevance floor on a run's fit split.

Nothing changes live unless `apply` is set; a run of synthetic demo data is never applied.
"""

from __future__ import annotations

import math
from typing import Any

from chatbot.evaluation.apply import policy_apply
from chatbot.evaluation.rows import CASCADE, question_rows
from routing.evaluation.calibration import calibration_summary
from routing.evaluation.fit import auc, scorer_select
from routing.evaluation.grading import answer_right
from routing.evaluation.search import (
    Goal,
    floors_to_try,
    policies_search,
    rerank_floors_to_try,
)
from routing.models import EvaluationResult, EvaluationRun
from routing.scorer import DEFAULT_WEIGHTS, score_signals

LABEL = "answerable, and F1 >= 0.5 or the answer contains a gold answer"


def _labelled(run: EvaluationRun, split: str) -> tuple[list[dict], list[bool]]:
    results = (
        EvaluationResult.objects.filter(run=run, split=split).exclude(tier=CASCADE).order_by("id")
    )
    answered = [r for r in results if r.signals and not r.error_code]
    labels = [
        answer_right(
            answer=r.answer,
            abstained=r.said_dont_know,
            answerable=r.answerable,
            f1=r.f1,
            gold=r.gold_answers,
        )
        for r in answered
    ]
    return [r.signals for r in answered], labels


def _known(value: float) -> float | None:
    """None for an AUC that cannot be computed (one class only): JSON has no NaN."""
    return None if math.isnan(value) else value


def run_fit(*, run: EvaluationRun, apply: bool, goal: Goal | None = None) -> dict[str, Any]:
    """Fit weights and choose a policy on the fit split; with `apply`, write them live.

    When no scorer beats chance in cross-validation the run's recorded weights are kept.
    Returns what was chosen (also stored in `run.settings["fit"]` and `["choice"]`).
    """
    if apply and (run.settings or {}).get("demo"):
        raise ValueError(f"Run #{run.pk} holds synthetic demo data: it cannot be applied.")
    signals, labels = _labelled(run, "fit")
    report, candidates = scorer_select(signals=signals, labels=labels)
    recorded = run.settings.get("passes", {}).get("tiers_alone", {})
    weights = report.weights if report else dict(run.scorer_weights or {}) or None
    test_signals, test_labels = _labelled(run, "test")
    before = dict(run.scorer_weights or {}) or dict(DEFAULT_WEIGHTS)
    fit = {
        "label": LABEL,
        "cv_auc_fit_split": candidates,
        "chosen": report.as_dict() if report else None,
        "note": "fitted on the fit split"
        if report
        else "no scorer beats chance (mean CV AUC <= 0.5): the run's weights are kept",
        "weights": weights,
        "test_auc": _known(auc([score_signals(s, weights) for s in test_signals], test_labels))
        if test_signals
        else None,
        # Is the score a probability? Test rows, under the run's weights and the fitted ones.
        "calibration": {
            "split": "test",
            "before": calibration_summary(
                [score_signals(s, before) for s in test_signals], test_labels
            ),
            "after": calibration_summary(
                [score_signals(s, weights) for s in test_signals], test_labels
            ),
        },
    }
    tier_order, rows = question_rows(run=run, split="fit")
    collected = float(run.settings.get("relevance_floor", 0.0))
    collected_rerank = float(run.settings.get("rerank_floor") or 0.0)
    support_check = bool(recorded.get("support_check", True))
    result = policies_search(
        rows=rows,
        tier_order=tier_order,
        goal=goal or Goal(),
        weights=weights,
        support_check=support_check,
        floors=floors_to_try(collected=collected),
        reference_floor=collected,
        rerank_floors=rerank_floors_to_try(rows=rows, collected=collected_rerank),
        reference_rerank_floor=collected_rerank,
    )
    choice = None
    if result.chosen is not None:
        choice = {
            **result.chosen.policy.as_dict(),
            "weights": weights,
            "fit_split": result.chosen.as_dict(),
        }
    run.settings["fit"] = fit
    run.settings["choice"] = choice
    applied: list[str] = []
    if apply:
        if choice is None:
            raise ValueError("No policy meets the goals on the fit split: nothing applied.")
        applied = policy_apply(
            run=run,
            tiers=choice["tiers"],
            thresholds=choice["thresholds"],
            floor=choice["floor"],
            rerank_floor=choice.get("rerank_floor"),
            weights=weights if report else None,
            source=f"run {run.pk}, fit split",
            calibration=fit["calibration"],
        )
        run.settings["applied"] = applied
    run.save(update_fields=["settings"])
    return {"fit": fit, "choice": choice, "applied": applied}
