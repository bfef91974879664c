"""Choose the cascade's tiers and thresholds from a stored evaluation run (no model calls)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.evaluations import evaluation_rows, tiers_apply_policy, tuning_from_rows


class Command(BaseCommand):
    help = (
        "Replay a stored evaluation run over candidate thresholds and tier subsets; print the "
        "best policy under a cost budget per question or the cheapest reaching a target F1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="EvaluationRun id.")
        goal = parser.add_mutually_exclusive_group(required=True)
        goal.add_argument("--budget", type=float, help="Mean cost per question (USD).")
        goal.add_argument("--target-f1", type=float, help="F1 to reach, as cheaply as possible.")
        parser.add_argument(
            "--split",
            choices=["all", "fit", "test"],
            default="all",
            help="Questions to tune on (the evaluate command splits by passage).",
        )
        parser.add_argument(
            "--objective",
            choices=["f1", "answerable_f1", "balanced"],
            default="f1",
            help="f1: all questions, a right abstention counts; answerable_f1: answerable only; "
            "balanced: mean of answerable F1 and abstention on unanswerable.",
        )
        parser.add_argument(
            "--min-abstention",
            type=float,
            help="Only policies declining at least this share of unanswerable questions.",
        )
        parser.add_argument("--apply", action="store_true", help="Write the choice to the tiers.")
        parser.add_argument("--json", action="store_true", help="Print JSON only.")

    def handle(self, *args: Any, **options: Any) -> None:
        split = None if options["split"] == "all" else options["split"]
        loaded = evaluation_rows(run_id=options["run"], split=split)
        if loaded is None:
            raise CommandError(f"No evaluation run {options['run']}.")
        tier_order, rows = loaded
        if not rows:
            raise CommandError("The run has no question answered by every tier yet.")
        result = tuning_from_rows(
            tier_order=tier_order,
            rows=rows,
            budget=options["budget"],
            target_f1=options["target_f1"],
            objective=options["objective"],
            min_abstention=options["min_abstention"],
        )
        chosen = result["chosen"]
        report = {
            "run": options["run"],
            "split": options["split"],
            "objective": options["objective"],
            "min_abstention": options["min_abstention"],
            "questions": result["questions"],
            "policies_tried": result["policies_tried"],
            "budget": options["budget"],
            "target_f1": options["target_f1"],
            "chosen": chosen,
            "current": result["current"],
            "each_tier_alone": result["singles"],
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self._table(result)
        if chosen is None:
            raise CommandError("No policy meets that goal on this run.")
        if options["apply"]:
            summary = tiers_apply_policy(tiers=chosen["tiers"], thresholds=chosen["thresholds"])
            self.stdout.write("applied: " + "; ".join(summary))

    def _table(self, result: dict[str, Any]) -> None:
        self.stdout.write(
            f"{result['policies_tried']} policies replayed over {result['questions']} questions"
        )
        header = (
            f"{'policy':48} {'F1':>6} {'F1 ans':>7} {'abst':>6} {'cost/q':>11} {'vs largest':>10}"
        )
        self.stdout.write(header)
        rows = [*result["singles"]]
        if result["current"]:
            rows.append({**result["current"], "label": "current setting"})
        if result["chosen"]:
            rows.append({**result["chosen"], "label": "CHOSEN " + result["chosen"]["label"]})
        for p in rows:
            ratio = p["cost_vs_largest"]
            self.stdout.write(
                f"{p['label'][:48]:48} {p['f1']:6.3f} {p['answerable_f1']:7.3f} "
                f"{p['abstention_unanswerable']:6.2f} {p['mean_cost']:11.8f} "
                f"{'' if ratio is None else f'{ratio:10.2f}'}"
            )
