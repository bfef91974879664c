"""Choose the cascade's tiers, thresholds and floor from a stored run (no model calls).

A thin wrapper around `chatbot.evaluations.tuning_from_run`: the search runs on the run's fit
split and the figures come from its test split.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.evaluation.apply import policy_apply
from chatbot.evaluations import tuning_from_run
from routing.evaluation.search import Goal
from routing.models import EvaluationRun


class Command(BaseCommand):
    help = (
        "Search tier subsets, thresholds and floors on a run's fit split; report the choice on "
        "its test split; optionally apply it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="EvaluationRun id.")
        goal = parser.add_mutually_exclusive_group()
        goal.add_argument("--budget", type=float, help="Mean cost per question (USD).")
        goal.add_argument("--target-f1", type=float, help="Answerable F1 to reach, cheapest.")
        parser.add_argument(
            "--max-cost-ratio",
            type=float,
            help="Cost at most this share of the largest tier alone (default 0.70 without a goal).",
        )
        parser.add_argument(
            "--max-f1-loss",
            type=float,
            help="Answerable F1 at most this below the largest tier (default 0.02 without a goal).",
        )
        parser.add_argument(
            "--min-abstention", type=float, help="Decline at least this share of near misses."
        )
        parser.add_argument("--apply", action="store_true", help="Write the choice live.")
        parser.add_argument("--json", action="store_true", help="Print JSON only.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = EvaluationRun.objects.filter(pk=options["run"]).first()
        if run is None:
            raise CommandError(f"No evaluation run {options['run']}.")
        asked = options["budget"] is not None or options["target_f1"] is not None
        default_ratio, default_loss = (None, None) if asked else (0.70, 0.02)
        goal = Goal(
            max_cost_ratio=options["max_cost_ratio"]
            if options["max_cost_ratio"] is not None
            else default_ratio,
            max_f1_loss=options["max_f1_loss"]
            if options["max_f1_loss"] is not None
            else default_loss,
            min_near_miss_abstention=options["min_abstention"],
            budget=options["budget"],
            target_f1=options["target_f1"],
        )
        result = tuning_from_run(run=run, goal=goal)
        if result.get("error"):
            raise CommandError(result["error"])
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, default=str))
        else:
            self._table(result)
        chosen = result["chosen"]
        if chosen is None:
            raise CommandError("No policy meets that goal on this run's fit split.")
        if options["apply"]:
            try:
                summary = policy_apply(
                    run=run,
                    tiers=chosen["tiers"],
                    thresholds=chosen["thresholds"],
                    floor=chosen["floor"],
                    source=f"run {run.pk}, fit split (tune_thresholds)",
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write("applied: " + "; ".join(summary))

    def _table(self, result: dict[str, Any]) -> None:
        self.stdout.write(
            f"{result['policies_tried']} policies searched on {result['fit_questions']} fit "
            f"questions; figures on {result['test_questions']} test questions"
        )
        self.stdout.write(
            f"{'policy':52} {'F1 ans':>7} {'near miss':>9} {'off-topic':>9} {'cost/q':>11} {'vs L':>6}"
        )
        for p in result["table"]:
            ratio = p.get("cost_vs_reference")
            label = ("CHOSEN " if p is result["chosen"] else "") + p["label"]
            self.stdout.write(
                f"{label[:52]:52} {_fmt(p['answerable_f1'], 3):>7} "
                f"{_fmt(p['near_miss_abstention']):>9} {_fmt(p['off_topic_abstention']):>9} "
                f"{p['mean_cost']:11.8f} {_fmt(ratio):>6}"
            )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
