"""A run's figures: test split for what is reported, and the replay against the real cascade."""

from __future__ import annotations

from typing import Any

from chatbot.evaluation.live import policy_from_settings
from chatbot.evaluation.rows import CASCADE, question_rows
from routing.evaluation.replay import (
    Policy,
    Summary,
    policy_summary,
    question_replay,
    tiers_alone_summaries,
)
from routing.models import EvaluationResult, EvaluationRun


def _rate(values: list[bool] | list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _live_tier(result: EvaluationResult) -> str | None:
    """The tier whose answer the live cascade accepted (None: declined, abstained or failed)."""
    if result.abstained:
        return None
    return next((a["tier"] for a in result.attempts or [] if a.get("outcome") == "accepted"), None)


def cascade_figures(*, run: EvaluationRun) -> dict[str, Any] | None:
    """The real cascade pass's own figures (stored answers, not a replay), or None."""
    real = list(EvaluationResult.objects.filter(run=run, tier=CASCADE))
    if not real:
        return None
    answerable = [r for r in real if r.answerable]
    latencies = sorted(r.latency_ms for r in real)
    return {
        "label": "cascade (as run)",
        "questions": len(real),
        "answerable_f1": _rate([r.f1 for r in answerable]),
        "near_miss_abstention": _rate(
            [r.abstained for r in real if r.source == "squad" and not r.answerable]
        ),
        "off_topic_abstention": _rate([r.abstained for r in real if r.source == "off_topic"]),
        "false_abstention": _rate([r.abstained for r in answerable]),
        "error_rate": _rate([bool(r.error_code) and not r.abstained for r in real]),
        "mean_cost": sum(float(r.cost) for r in real) / len(real),
        "escalation_rate": _rate([len(r.attempts or []) > 1 for r in real]),
        "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p95_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
        "marked": True,
    }


def cascade_agreement(*, run: EvaluationRun) -> dict[str, Any] | None:
    """Per question of the real cascade pass: does the replay, with the pass's own recorded
    thresholds, floor and weights, predict the tier that answered and whether it abstained?"""
    recorded = (run.settings or {}).get("passes", {}).get("cascade")
    real = list(EvaluationResult.objects.filter(run=run, tier=CASCADE))
    if not real or recorded is None:
        return None
    policy = policy_from_settings(recorded, label="the cascade pass's policy, replayed")
    _, rows = question_rows(run=run)
    by_id = {r.question_id: r for r in rows}
    compared = same_tier = same_abstention = 0
    disagreements = []
    groups: dict[str, dict[str, list[bool]]] = {}
    for result in real:
        row = by_id.get(result.question_id)
        if row is None or not all(t in row.tiers for t in policy.tiers):
            continue
        outcome = question_replay(row=row, policy=policy)
        live_tier = _live_tier(result)
        compared += 1
        same_tier += outcome.tier == live_tier
        same_abstention += outcome.abstained == result.abstained
        if outcome.tier != live_tier or outcome.abstained != result.abstained:
            disagreements.append(
                {
                    "question_id": result.question_id,
                    "live": {"tier": live_tier, "abstained": result.abstained},
                    "replay": {"tier": outcome.tier, "abstained": outcome.abstained},
                }
            )
        group = "answerable" if row.answerable else "near_miss" if row.near_miss else "off_topic"
        entry = groups.setdefault(group, {"live": [], "replay": []})
        entry["live"].append(result.abstained)
        entry["replay"].append(outcome.abstained)
    return {
        "policy": policy.as_dict(),
        "compared": compared,
        "tier_agreement": same_tier / compared if compared else None,
        "abstention_agreement": same_abstention / compared if compared else None,
        # Declined or abstained, live and replayed, per kind of question: never mixed.
        "abstention_by_kind": {
            kind: {
                "questions": len(v["live"]),
                "live": _rate(v["live"]),
                "replay": _rate(v["replay"]),
            }
            for kind, v in sorted(groups.items())
        },
        "disagreements": disagreements,
    }


def _figures(summary: Summary) -> dict[str, Any]:
    data = summary.as_dict()
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in data.items()}


def run_report(*, run: EvaluationRun) -> dict[str, Any]:
    """Figures per policy on the test split (the fit split shown apart), and the agreement."""
    run_settings = run.settings or {}
    floor = float(run_settings.get("relevance_floor", 0.0))
    weights = run.scorer_weights or None
    passes = run_settings.get("passes", {})
    report: dict[str, Any] = {
        "run": run.pk,
        "relevance_floor": floor,
        "reported_on": "test",
        "splits": {},
    }
    choice = run_settings.get("choice")
    for split in ("test", "fit"):
        order, rows = question_rows(run=run, split=split)
        if not rows:
            continue
        singles = tiers_alone_summaries(rows=rows, tier_order=order, floor=floor, weights=weights)
        reference = singles[-1]
        figures = {s.policy.label: _figures(s) for s in singles}
        for name in ("cascade", "tiers_alone"):
            if name in passes and passes[name]["tiers"]:
                policy = policy_from_settings(passes[name], label=f"{name} pass's policy, replayed")
                figures[policy.label] = _figures(
                    policy_summary(rows=rows, policy=policy, reference=reference)
                )
        if choice:
            policy = Policy(
                tiers=tuple(choice["tiers"]),
                thresholds=tuple(choice["thresholds"]),
                floor=float(choice["floor"]),
                rerank_floor=float(choice.get("rerank_floor") or 0.0),
                weights=choice.get("weights") or weights,
                support_check=bool(choice.get("support_check", True)),
                label="chosen on the fit split",
            )
            figures[policy.label] = _figures(
                policy_summary(rows=rows, policy=policy, reference=reference)
            )
        report["splits"][split if split == "test" else "fit (chose the weights and thresholds)"] = (
            figures
        )
    report["real_cascade"] = cascade_figures(run=run)
    report["agreement"] = cascade_agreement(run=run)
    report["fit"] = run_settings.get("fit")
    report["choice"] = choice
    return report


def report_table(report: dict[str, Any]) -> str:
    """The report's figures as a plain-text table."""
    lines = []
    for split, figures in report["splits"].items():
        lines.append(f"\n[{split} questions]")
        lines.append(
            f"{'policy':<40} {'n':>4} {'ans F1':>7} {'near miss':>9} {'off-topic':>9} "
            f"{'false abst':>10} {'cost/q':>10} {'cost/L':>7} {'F1/L':>6} {'p50 ms':>8}"
        )
        for label, d in figures.items():
            lines.append(
                f"{label[:40]:<40} {d['questions']:>4} {_fmt(d['answerable_f1'], 3):>7} "
                f"{_fmt(d['near_miss_abstention']):>9} {_fmt(d['off_topic_abstention']):>9} "
                f"{_fmt(d['false_abstention']):>10} {d['mean_cost']:>10.3e} "
                f"{_fmt(d['cost_vs_reference']):>7} {_fmt(d['f1_vs_reference']):>6} "
                f"{d['latency_p50_ms']:>8.0f}"
            )
    agreement = report.get("agreement")
    if agreement:
        lines.append(
            f"\n[real cascade vs replay] {agreement['compared']} questions: tier "
            f"{_fmt(agreement['tier_agreement'])}, abstention {_fmt(agreement['abstention_agreement'])}"
        )
        for kind, v in agreement["abstention_by_kind"].items():
            lines.append(
                f"  {kind:<10} n={v['questions']:<4} declined live {_fmt(v['live'])}, "
                f"replay {_fmt(v['replay'])}"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
