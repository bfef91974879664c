"""Refit the router's question clusters from the questions customers asked (run it offline,
e.g. nightly): k-means over their stored vectors; each cluster's learners restart from the
rewards of the routed answers now in it. Prints the clusters as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.router import clusters_refresh


class Command(BaseCommand):
    help = "Refit the router's question clusters (k-means) and replay their rewards."

    def add_arguments(self, parser: CommandParser) -> None:
        """--k clusters, --seed for k-means, --limit latest questions used."""
        parser.add_argument("--k", type=int, default=6, help="Number of clusters (1-32).")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--limit", type=int, default=5000, help="Use the latest N recorded questions."
        )

    def handle(self, *args: object, **options: object) -> None:
        """Refit and print what was done."""
        try:
            refit = clusters_refresh(
                k=int(options["k"]),  # type: ignore[call-overload]
                seed=int(options["seed"]),  # type: ignore[call-overload]
                limit=int(options["limit"]),  # type: ignore[call-overload]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(asdict(refit), indent=2))
