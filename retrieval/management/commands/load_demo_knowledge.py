"""Load (or refresh) the demo help centre into the knowledge base."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from retrieval.ingestion import title_from_markdown
from retrieval.services import document_ingest_text


class Command(BaseCommand):
    help = (
        "Index the demo company's help-centre documents (idempotent: unchanged files are skipped)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--folder", default=str(settings.DEMO_KNOWLEDGE_DIR))

    def handle(self, *args: Any, **options: Any) -> None:
        files = sorted(Path(options["folder"]).glob("*.md"))
        for path in files:
            text = path.read_text(encoding="utf-8")
            document = document_ingest_text(
                source_name=f"demo/{path.name}",
                title=title_from_markdown(text, path.stem),
                text=text,
            )
            self.stdout.write(
                f"{document.title}: {document.chunks_total} chunks (v{document.version})"
            )
        self.stdout.write(self.style.SUCCESS(f"demo knowledge: {len(files)} documents"))
