"""Two or more stored evaluation runs on the same questions, side by side and question by question.

Usage: DATABASE_NAME=<the runs' database> python bench/runs_compare.py RUN_ID RUN_ID [...]
       [--tier medium] [--out FILE]

For each run, over every question it answered with the tier (both splits together): mean F1 and
the share of "I don't know" on answerable questions, the share declined or "I don't know" on the
near misses (unanswerable; declining is right), mean prompt tokens and the p50 time to first
token. Then each later run against the first, paired on the questions both answered: F1 better,
worse and equal (within 0.05), so a difference can be told from noise. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

# F1 differences below this count as equal in the paired comparison.
SAME = 0.05


def _figures(rows: list) -> dict:
    answerable = [r for r in rows if r.answerable]
    near = [r for r in rows if not r.answerable]
    ttft = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    return {
        "questions": len(rows),
        "answerable": len(answerable),
        "answerable_f1": round(statistics.fmean(r.f1 for r in answerable), 4)
        if answerable
        else None,
        "answerable_said_dont_know": (
            round(sum(r.said_dont_know for r in answerable) / len(answerable), 3)
            if answerable
            else None
        ),
        "near_misses": len(near),
        "near_miss_declined": (
            round(sum(r.said_dont_know or r.abstained for r in near) / len(near), 3)
            if near
            else None
        ),
        "mean_tokens_in": round(statistics.fmean(r.tokens_in for r in rows), 1) if rows else None,
        "ttft_p50_ms": round(statistics.median(ttft), 1) if ttft else None,
    }


def main() -> None:
    """Print the runs' figures and the paired comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=int)
    parser.add_argument("--tier", default="medium")
    parser.add_argument("--out")
    args = parser.parse_args()
    import django

    django.setup()
    from routing.models import EvaluationResult, EvaluationRun

    by_run = {}
    for run_id in args.runs:
        run = EvaluationRun.objects.filter(pk=run_id).first()
        if run is None:
            sys.exit(f"No evaluation run {run_id} in this database.")
        rows = list(
            EvaluationResult.objects.filter(run=run, tier=args.tier, source="squad").order_by(
                "question_id"
            )
        )
        by_run[run_id] = (run, {r.question_id: r for r in rows})
    base_id = args.runs[0]
    _, base_rows = by_run[base_id]
    result: dict = {"benchmark": "runs_compare", "tier": args.tier, "runs": {}, "paired": {}}
    for run_id, (run, rows) in by_run.items():
        result["runs"][str(run_id)] = {"name": run.name, **_figures(list(rows.values()))}
        if run_id == base_id:
            continue
        shared = [
            q for q in rows if q in base_rows and rows[q].answerable and base_rows[q].answerable
        ]
        deltas = [rows[q].f1 - base_rows[q].f1 for q in shared]
        result["paired"][f"{run_id} vs {base_id}"] = {
            "answerable_questions": len(shared),
            "f1_better": sum(d > SAME for d in deltas),
            "f1_worse": sum(d < -SAME for d in deltas),
            "f1_equal": sum(abs(d) <= SAME for d in deltas),
            "mean_f1_change": round(statistics.fmean(deltas), 4) if deltas else None,
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
