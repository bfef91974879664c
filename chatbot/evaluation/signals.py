"""What each scorer signal and the fitted scorers are worth on a stored run (no model call).

The same engine as everything else: `scorer_select` on the fit split, `policies_search` on the
fit split, figures on the test split (with and without the support check).
"""

from __future__ import annotations

from typing import Any

from chatbot.evaluation.rows import CASCADE, question_rows
from routing.evaluation.fit import auc, scorer_select, signal_aucs
from routing.evaluation.grading import answer_right
from routing.evaluation.replay import Policy, policy_summary
from routing.evaluation.search import Goal, floors_to_try, policies_search
from routing.models import EvaluationResult, EvaluationRun
from routing.scorer import FEATURES, score_signals

CHECK = "check_yes"


def _right(r: EvaluationResult) -> bool:
    return answer_right(
        answer=r.answer,
        abstained=r.said_dont_know,
        answerable=r.answerable,
        f1=r.f1,
        gold=r.gold_answers,
    )


def signals_study(*, run: EvaluationRun, floor: float | None = None) -> dict[str, Any]:
    """Single-signal AUCs per tier and split, both scorers, the choice on fit and its test figures."""
    results = [
        r
        for r in EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE).order_by("id")
        if r.signals and not r.error_code
    ]
    order, fit_rows = question_rows(run=run, split="fit")
    _, test_rows = question_rows(run=run, split="test")
    if len(order) < 2:
        raise ValueError("The run needs at least two tiers.")
    collected = float(run.settings.get("relevance_floor", 0.0))
    floor = collected if floor is None else max(floor, collected)
    fit = [r for r in results if r.split == "fit"]
    scorers: dict[str, Any] = {}
    for name, exclude in (("with_check", ()), ("without_check", (CHECK,))):
        report, cv = scorer_select(
            signals=[r.signals for r in fit], labels=[_right(r) for r in fit], exclude=exclude
        )
        scorers[name] = {
            "weights": report.weights if report else None,
            "cv_auc_fit": cv,
            "chosen": report.as_dict() if report else None,
        }
    out: dict[str, Any] = {
        "run": run.pk,
        "tiers": order,
        "relevance_floor": floor,
        "rows": len(results),
        "signal_auc": {},
        "scorers": scorers,
        "policies": {},
    }
    for tier in order:
        for split in ("fit", "test"):
            subset = [r for r in results if r.tier == tier and r.split == split]
            squad = [r for r in subset if r.source == "squad"]
            entry = {
                "right": signal_aucs(
                    signals=[r.signals for r in subset],
                    labels=[_right(r) for r in subset],
                    names=FEATURES,
                ),
                "answerable": signal_aucs(
                    signals=[r.signals for r in squad],
                    labels=[r.answerable for r in squad],
                    names=FEATURES,
                ),
                "rows": len(subset),
            }
            for name, scorer in scorers.items():
                if scorer["weights"] is None:
                    continue
                value = auc(
                    [score_signals(r.signals, scorer["weights"]) for r in subset],
                    [_right(r) for r in subset],
                )
                entry["right"][f"scorer_{name}"] = {
                    "auc": None if value != value else round(value, 4),
                    "n": len(subset),
                }
            out["signal_auc"].setdefault(tier, {})[split] = entry
    for name, scorer in scorers.items():
        if scorer["weights"] is None:
            out["policies"][name] = None
            continue
        support_check = name == "with_check"
        search = policies_search(
            rows=fit_rows,
            tier_order=order,
            goal=Goal(),
            weights=scorer["weights"],
            support_check=support_check,
            floors=floors_to_try(collected=collected),
            reference_floor=floor,
        )
        reference = policy_summary(
            rows=test_rows,
            policy=Policy(tiers=(order[-1],), thresholds=(0.0,), floor=floor, support_check=False),
        )
        chosen = search.chosen
        entry: dict[str, Any] = {
            "chosen_on_fit": chosen.as_dict() if chosen else None,
            # The largest tier alone, its threshold swept on the test split.
            "tradeoff_test_largest_alone": [
                policy_summary(
                    rows=test_rows,
                    policy=Policy(
                        tiers=(order[-1],),
                        thresholds=(step / 10,),
                        floor=floor,
                        weights=scorer["weights"],
                        support_check=support_check,
                    ),
                    reference=reference,
                ).as_dict()
                for step in range(11)
            ],
        }
        if chosen is not None:
            entry["test_split"] = policy_summary(
                rows=test_rows, policy=chosen.policy, reference=reference
            ).as_dict()
            # The last tier's threshold swept on the test split, lower tiers as chosen on fit.
            entry["tradeoff_test_last_threshold"] = [
                policy_summary(
                    rows=test_rows,
                    policy=Policy(
                        tiers=chosen.policy.tiers,
                        thresholds=(*chosen.policy.thresholds[:-1], step / 10),
                        floor=floor,
                        weights=scorer["weights"],
                        support_check=support_check,
                    ),
                    reference=reference,
                ).as_dict()
                for step in range(11)
            ]
        out["policies"][name] = entry
    return out
