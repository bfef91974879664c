"""Bulk-load files, folders, web pages and sitemaps into the knowledge base, with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from retrieval.models import KnowledgeDocument
from retrieval.parsing import SUPPORTED_TYPES, DocumentRejected
from retrieval.services import IN_PROGRESS, document_accept, document_process, document_upload
from retrieval.web import WebRefused
from retrieval.web_tasks import web_source_add, web_source_sync, web_sync_ensure


def is_url(raw: str) -> bool:
    """Whether a command argument is a web address rather than a path."""
    return raw.lower().startswith(("http://", "https://"))


def files_under(paths: list[str]) -> list[Path]:
    """Supported files among the given files and (recursively) folders, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in SUPPORTED_TYPES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"{raw}: no such file or folder")
    return found


class Command(BaseCommand):
    help = (
        "Ingest files (.txt .md .html .pdf .docx), folders, web pages and sitemaps (http(s) URLs: "
        "added as web sources, fetched now and re-synced on the worker's schedule). By default "
        "the work is queued "
        "for the task worker (manage.py db_worker) and this command waits with a progress bar; "
        "--inline does the work here, --no-wait only queues."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--inline", action="store_true", help="parse and embed in this process")
        parser.add_argument("--no-wait", action="store_true", help="queue and return at once")
        parser.add_argument("--prefix", default="", help="prefix for source names, e.g. 'manuals/'")
        parser.add_argument(
            "--timeout", type=float, default=3600, help="seconds to wait for the worker"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        urls = [p for p in options["paths"] if is_url(p)]
        files = files_under([p for p in options["paths"] if not is_url(p)])
        if not files and not urls:
            raise CommandError("no supported files found")
        accepted: list[KnowledgeDocument] = []
        rejected = 0
        for url in urls:
            try:
                source = web_source_add(url=url)
            except WebRefused as exc:
                raise CommandError(str(exc)) from None
            report = web_source_sync(source=source, inline=options["inline"])
            web_sync_ensure()
            for error in report.errors:
                self.stderr.write(f"web: {error}")
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items()))
            waited = (
                f" (waited {report.waited:.0f} s between requests, as its robots.txt asks)"
                if report.waited >= 1
                else ""
            )
            self.stdout.write(
                f"{source.url} ({source.kind or 'not fetched'}): {counts or 'no pages'}{waited}"
            )
            accepted.extend(KnowledgeDocument.objects.filter(id__in=report.documents))
        for path in tqdm(files, desc="checking", unit="file", disable=options["verbosity"] == 0):
            name = options["prefix"] + path.name
            try:
                data = path.read_bytes()
                if options["inline"]:
                    accepted.append(document_accept(source_name=name, data=data))
                else:
                    accepted.append(document_upload(source_name=name, data=data))
            except DocumentRejected as exc:
                rejected += 1
                self.stderr.write(f"rejected: {exc}")
        if options["inline"]:
            bar = tqdm(accepted, desc="ingesting", unit="doc", disable=options["verbosity"] == 0)
            for document in bar:
                if document.status != KnowledgeDocument.Status.READY:
                    bar.set_postfix_str(document.source_name[-40:])
                    document_process(document_id=document.id, version=document.version)
        elif not options["no_wait"]:
            self._wait(accepted, options["timeout"], options["verbosity"])
        self._report([d.id for d in accepted], rejected)

    def _wait(self, documents: list[KnowledgeDocument], timeout: float, verbosity: int) -> None:
        ids = [d.id for d in documents]
        bar = tqdm(total=len(ids), desc="ingesting", unit="doc", disable=verbosity == 0)
        started, warned = time.monotonic(), False
        while True:
            pending = KnowledgeDocument.objects.filter(id__in=ids, status__in=IN_PROGRESS)
            left = pending.count()
            bar.n = len(ids) - left
            bar.refresh()
            if not left:
                break
            elapsed = time.monotonic() - started
            if (
                elapsed > 30
                and not warned
                and not pending.exclude(status=KnowledgeDocument.Status.QUEUED).exists()
                and bar.n == 0
            ):
                self.stderr.write(
                    "nothing started after 30 s: is a worker running? (manage.py db_worker)"
                )
                warned = True
            if elapsed > timeout:
                bar.close()
                raise CommandError(f"{left} document(s) still unfinished after {timeout:.0f} s")
            time.sleep(1)
        bar.close()

    def _report(self, ids: list[int], rejected: int) -> None:
        documents = KnowledgeDocument.objects.filter(id__in=ids).defer("raw", "content")
        failed = [d for d in documents if d.status == KnowledgeDocument.Status.FAILED]
        for document in failed:
            self.stderr.write(f"failed: {document.source_name}: {document.error}")
        ready = sum(1 for d in documents if d.status == KnowledgeDocument.Status.READY)
        chunks = sum(
            d.chunks_total for d in documents if d.status == KnowledgeDocument.Status.READY
        )
        self.stdout.write(
            f"ready: {ready} documents ({chunks} chunks); failed: {len(failed)}; "
            f"rejected: {rejected}; unfinished: {len(ids) - ready - len(failed)}"
        )
