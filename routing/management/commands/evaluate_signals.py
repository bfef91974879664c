"""What each scorer signal and the fitted scorers are worth on a stored evaluation run.

A thin wrapper around `chatbot.evaluation.signals.signals_study` (the one engine: fit split
chooses, test split reports).

    manage.py evaluate_signals RUN_ID [--floor 0.30] [--json out.json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.evaluation.signals import signals_study
from routing.models import EvaluationRun


class Command(BaseCommand):
    help = "Single-signal and combined scorer AUCs, the choice on fit and its test figures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", type=int)
        parser.add_argument("--floor", type=float, default=None, help="Relevance floor to report")
        parser.add_argument("--json", help="Also write the JSON to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        run = EvaluationRun.objects.filter(pk=options["run"]).first()
        if run is None:
            raise CommandError(f"No evaluation run {options['run']}.")
        try:
            out = signals_study(run=run, floor=options["floor"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(out, indent=1, default=str)
        self.stdout.write(text)
        if options["json"]:
            Path(options["json"]).write_text(text + "\n", encoding="utf-8")
