"""Switch the stored vectors to another embedder in the background (search stays up meanwhile)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from retrieval.embedders import embeddings_switch_run, embeddings_switch_start
from retrieval.models import EmbedderState


class Command(BaseCommand):
    help = (
        "Embed every passage and cached question again with another embedder (default: the "
        "EMBEDDER setting) on the task worker, then swap the new vectors in at once; search "
        "uses the old ones until then. --status shows progress; --here runs it in this process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", default="", help="dotted path (default: EMBEDDER)")
        parser.add_argument("--status", action="store_true", help="only show the state")
        parser.add_argument("--here", action="store_true", help="run now, not on the worker")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["status"]:
            target = options["to"] or settings.EMBEDDER
            try:
                started = embeddings_switch_start(target=target)
            except (RuntimeError, ImportError) as exc:
                raise CommandError(str(exc)) from exc
            if not started:
                self.stdout.write(f"The stored vectors are already {target}'s.")
            elif options["here"]:
                self.stdout.write(embeddings_switch_run())
        state = EmbedderState.objects.filter(id=1).first()
        if state is None:
            self.stdout.write(f"No switch yet: the vectors are EMBEDDER's ({settings.EMBEDDER}).")
            return
        self.stdout.write(
            f"active {state.active}; switching to {state.target or '-'}; "
            f"{state.done}/{state.total} embedded{'; error: ' + state.error if state.error else ''}"
        )
