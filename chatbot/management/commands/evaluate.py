"""Evaluate tiers and the cascade on SQuAD-format questions through the real pipeline.

A thin wrapper around `chatbot.evaluation.run.evaluation_run` (see `chatbot.evaluation`).
Keep the evaluation's knowledge apart from the help centre with another database on the
same server: `DATABASE_NAME=eval manage.py migrate && DATABASE_NAME=eval manage.py evaluate ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.evaluation.labelled import labelled_dataset_write
from chatbot.evaluation.report import report_table
from chatbot.evaluation.run import EvaluationRequest, evaluation_report_store, evaluation_run
from routing.models import EvaluationRun


class Command(BaseCommand):
    help = (
        "Run questions through the pipeline per tier alone and with the cascade; grade and store."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("questions", nargs="?", help="SQuAD-format questions.jsonl")
        parser.add_argument("--passages", help="passages.jsonl to ingest first (idempotent)")
        parser.add_argument(
            "--limit", type=int, default=0, help="SQuAD questions (half answerable)"
        )
        parser.add_argument("--off-topic", help="Questions from another source (all unanswerable)")
        parser.add_argument("--off-topic-limit", type=int, default=0)
        parser.add_argument("--tiers", help="Comma-separated tiers to run alone (default: enabled)")
        parser.add_argument("--cascade-limit", type=int, default=0, help="Real cascade questions")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--resume", type=int, help="Continue an interrupted run")
        parser.add_argument("--report", type=int, help="Only compute the figures of a stored run")
        parser.add_argument(
            "--fit",
            action="store_true",
            help="Choose weights, thresholds and floor on the fit split (nothing changes live)",
        )
        parser.add_argument(
            "--apply", action="store_true", help="With --fit: write the choice to the live cascade"
        )
        parser.add_argument(
            "--labelled",
            action="store_true",
            help="The answers admins labelled in the message explorer as the questions "
            "(written to a JSONL file first; right answers are the gold)",
        )
        parser.add_argument("--name", default="")
        parser.add_argument("--json", help="Also write the report to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["report"]:
                run = EvaluationRun.objects.filter(pk=options["report"]).first()
                if run is None:
                    raise ValueError(f"No evaluation run {options['report']}.")
                report = evaluation_report_store(run=run)
            else:
                if options["labelled"]:
                    if options["questions"] or options["passages"]:
                        raise ValueError(
                            "--labelled reads its questions from the labelled answers."
                        )
                    options["questions"], count = labelled_dataset_write()
                    options["name"] = options["name"] or f"labelled answers ({count})"
                request = EvaluationRequest(
                    questions=options["questions"] or "",
                    passages=options["passages"] or "",
                    limit=options["limit"],
                    off_topic=options["off_topic"] or "",
                    off_topic_limit=options["off_topic_limit"],
                    tiers=tuple(
                        t.strip() for t in (options["tiers"] or "").split(",") if t.strip()
                    ),
                    cascade_limit=options["cascade_limit"],
                    seed=options["seed"],
                    name=options["name"],
                    resume=options["resume"],
                    fit=options["fit"],
                    apply=options["apply"],
                )
                _, report = evaluation_run(request=request)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(report, indent=1, default=str)
        if options["json"]:
            Path(options["json"]).write_text(text + "\n", encoding="utf-8")
        self.stdout.write(text)
        self.stdout.write(report_table(report))
