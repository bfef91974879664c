"""Web sources kept in sync: add one, sync its pages into documents, re-sync on a schedule.

A page's main content becomes a markdown document (source name web/<host>/...) that goes through
the normal ingestion path (retrieval.services). What a re-sync costs:
- the server answers 304 to the page's ETag / Last-Modified: one request, nothing else;
- the extracted text is unchanged (same sha256): one request and one extraction, no embedding;
- the text changed: document_upload stores a new version and the worker re-indexes it, only
  the changed passages embedded; once it is served, cached answers whose passages changed are
  retired and the others point at the new passages (document_changed);
- 404 or 410, or gone from its sitemap: the page is retired at once (its document deleted, so it
  is no longer searched, and its cached answers retired); robots.txt now disallowing it too;
- 5xx, timeouts and other failures: the last good version keeps serving until
  WEB_RETIRE_AFTER_FAILURES syncs in a row have failed, then the page is retired.

django-tasks has no periodic tasks: web_sync_task syncs the sources that are due, then queues
itself for the next due time (web_sync_ensure starts the chain when a source is added).

Syncs run on their own queue (WEB_QUEUE), taken by a worker of their own (`manage.py db_worker
--queue-name web`): a sitemap of hundreds of pages, each fetched no faster than the site's
robots.txt asks, can take an hour, and uploads must not wait behind it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_tasks import TaskResultStatus, task
from django_tasks_db.models import DBTaskResult

from retrieval.ingestion import IN_PROGRESS, Status
from retrieval.models import KnowledgeDocument, WebPage, WebSource
from retrieval.parsing import DocumentRejected
from retrieval.services import document_accept, document_process, document_upload
from retrieval.web import (
    Extractor,
    Fetched,
    Fetcher,
    RobotsDisallowed,
    WebRefused,
    WebUnavailable,
    sitemap_urls,
    url_check,
)

logger = logging.getLogger(__name__)

WEB_QUEUE = "web"

# Sitemap indexes may nest; more levels than this are not followed.
_SITEMAP_DEPTH = 3


@dataclass
class SyncReport:
    """What one sync did, page by page outcome counts, and the requests it made."""

    counts: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    waited: float = 0.0  # seconds spent waiting, as the site's robots.txt asks
    errors: list[str] = field(default_factory=list)
    documents: list[int] = field(default_factory=list)  # documents created or changed

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def web_source_add(*, url: str) -> WebSource:
    """Store a web source, due for its first sync now (web_sync_ensure queues it on the worker);
    WebRefused for a URL the fetcher would never fetch. Adding an existing URL returns it."""
    url = url_check(url)
    source, _ = WebSource.objects.get_or_create(url=url)
    return source


def web_source_sync(*, source: WebSource, inline: bool = False) -> SyncReport:
    """Fetch a source (a page or a sitemap) and sync each of its pages; documents that changed
    are queued for the worker, or indexed in this process with inline. Records the outcome and
    the next sync time on the source."""
    report = SyncReport()
    source.error = ""
    with Fetcher.for_url(source.url) as fetcher, Extractor() as extractor:
        sync = _Sync(fetcher=fetcher, extractor=extractor, inline=inline, report=report)
        try:
            if source.kind == WebSource.Kind.PAGE:
                page = _page_for(source, source.url)
                if page is not None:
                    report.add(_page_sync(page, sync))
            else:
                _source_fetch(source, sync)
        except (WebRefused, WebUnavailable) as exc:
            source.error = str(exc)
            report.errors.append(str(exc))
        report.requests, report.waited = fetcher.requests, fetcher.waited
    now = timezone.now()
    source.last_synced_at = now
    source.next_sync_at = now + timedelta(seconds=settings.WEB_SYNC_INTERVAL_SECONDS)
    source.save(update_fields=["kind", "error", "last_synced_at", "next_sync_at"])
    return report


@dataclass
class _Sync:
    """What one source's sync works with."""

    fetcher: Fetcher
    extractor: Extractor
    inline: bool
    report: SyncReport


def _source_fetch(source: WebSource, sync: _Sync) -> None:
    fetcher, report = sync.fetcher, sync.report
    fetched = fetcher.get(source.url)
    if fetched.status == 200 and fetched.is_sitemap:
        source.kind = WebSource.Kind.SITEMAP
        urls = _sitemap_pages(fetched, fetcher, report)
        listed: set[str] = set()
        for url in urls[: settings.WEB_MAX_PAGES]:
            try:
                url = url_check(url)
                fetcher.site_check(url)
            except WebRefused as exc:
                report.errors.append(str(exc))
                continue
            listed.add(url)
            page = _page_for(source, url)
            if page is not None:
                report.add(_page_sync(page, sync))
        if len(urls) > settings.WEB_MAX_PAGES:
            report.errors.append(
                f"{source.url}: lists {len(urls):,} pages; the first {settings.WEB_MAX_PAGES:,} "
                "are synced (WEB_MAX_PAGES)"
            )
        for page in source.pages.filter(state=WebPage.State.ACTIVE).exclude(url__in=listed):
            _page_retire(page, "no longer listed in the sitemap")
            report.add("retired")
        if report.errors:
            source.error = "\n".join(report.errors[:20])
        return
    if source.kind == WebSource.Kind.SITEMAP:
        if fetched.status in (404, 410):
            for page in source.pages.filter(state=WebPage.State.ACTIVE):
                _page_retire(page, f"the sitemap answered {fetched.status}")
                report.add("retired")
            source.error = f"{source.url}: the sitemap answered {fetched.status}"
        else:
            source.error = (
                f"{source.url}: answered {fetched.status} without a sitemap; its pages keep "
                "their last version"
            )
        return
    source.kind = source.kind or WebSource.Kind.PAGE
    page = _page_for(source, source.url)
    if page is not None:
        report.add(_page_sync(page, sync, fetched=fetched))


def _sitemap_pages(fetched: Fetched, fetcher: Fetcher, report: SyncReport) -> list[str]:
    """Page URLs of a sitemap, following a sitemap index (same site, bounded depth and count)."""
    pages: list[str] = []
    queue, seen, depth = [fetched], {fetched.url}, 0
    while queue and depth < _SITEMAP_DEPTH and len(pages) <= settings.WEB_MAX_PAGES:
        children: list[Fetched] = []
        for sitemap in queue:
            found, nested = sitemap_urls(sitemap.body)
            pages.extend(found)
            for url in nested:
                if url in seen or len(seen) > 50:
                    continue
                seen.add(url)
                try:
                    child = fetcher.get(url)
                except (WebRefused, WebUnavailable) as exc:
                    report.errors.append(str(exc))
                    continue
                if child.status == 200 and child.is_sitemap:
                    children.append(child)
                else:
                    report.errors.append(f"{url}: not a sitemap (status {child.status})")
        queue, depth = children, depth + 1
    return list(dict.fromkeys(pages))


def _page_for(source: WebSource, url: str) -> WebPage | None:
    """The page row for a URL (a URL another source already syncs is left to that source)."""
    page, _ = WebPage.objects.get_or_create(url=url, defaults={"source": source})
    return page if page.source_id == source.id else None


def web_source_name(url: str, suffix: str = ".md") -> str:
    """The document source name of a page: web/<host>/<slug>-<hash>.md (stable per URL; .pdf
    for a PDF, which is stored as fetched and parsed as an uploaded one is)."""
    parts = urlsplit(url)
    slug = re.sub(r"[^a-z0-9]+", "-", (parts.path + " " + parts.query).lower()).strip("-")[-60:]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    host = re.sub(r"[^a-z0-9.:-]+", "-", parts.netloc.lower())
    return f"web/{host}/{slug or 'index'}-{digest}{suffix}"


def _page_sync(page: WebPage, sync: _Sync, *, fetched: Fetched | None = None) -> str:
    """Sync one page; returns the outcome: unchanged, changed, retired, failed."""
    fetcher, inline, report = sync.fetcher, sync.inline, sync.report
    now = timezone.now()
    page.fetched_at = now
    try:
        if fetched is None:
            current = page.state == WebPage.State.ACTIVE and _page_document(page) is not None
            fetched = fetcher.get(
                page.url,
                etag=page.etag if current else "",
                last_modified=page.last_modified if current else "",
            )
        page.http_status = fetched.status
        if fetched.status == 304:
            return _page_ok(page, "unchanged")
        if fetched.status in (404, 410):
            _page_retire(page, f"the page answered {fetched.status}")
            return "retired"
        if fetched.status != 200:
            raise WebUnavailable(f"{page.url}: answered {fetched.status}")
        pdf = fetched.is_pdf
        if not pdf and not fetched.is_html:
            raise WebRefused(f"{page.url}: not an HTML page or a PDF ({fetched.content_type})")
        extracted = None if pdf else sync.extractor.extract(html=fetched.body, url=fetched.url)
    except RobotsDisallowed as exc:
        # The site asks not to be fetched there: not something to retry.
        _page_retire(page, str(exc))
        return "retired"
    except WebRefused as exc:
        return _page_failed(page, str(exc), report)
    except WebUnavailable as exc:
        return _page_failed(page, str(exc), report)
    page.etag, page.last_modified = fetched.etag, fetched.last_modified
    if extracted is None:
        # A PDF goes through the upload's parser (its text, outline and pages); its title is
        # the PDF's own, and a citation opens the file.
        data, title, anchors, suffix = fetched.body, "", {}, ".pdf"
    else:
        data, title, anchors = extracted.text.encode(), extracted.title, extracted.anchors
        suffix = ".md"
    digest = hashlib.sha256(data).hexdigest()
    document = _page_document(page)
    if document is not None and not document.source_name.endswith(suffix):
        # The address now serves the other kind (an HTML page became a PDF, or back): its
        # document is replaced by one of the new kind.
        document.delete()
        document = None
    if (
        document is not None
        and page.state == WebPage.State.ACTIVE
        and digest == page.content_hash
        and document.status in (*IN_PROGRESS, Status.READY)
    ):
        return _page_ok(page, "unchanged")
    try:
        name = document.source_name if document is not None else web_source_name(page.url, suffix)
        accept = document_accept if inline else document_upload
        document = accept(source_name=name, data=data, title=title)
    except DocumentRejected as exc:
        return _page_failed(page, str(exc), report)
    if document.web_page_id != page.id:
        KnowledgeDocument.objects.filter(id=document.id).update(web_page=page)
    if inline and document.status not in (Status.READY, Status.FAILED):
        document_process(document_id=document.id, version=document.version)
    page.content_hash = digest
    page.anchors = anchors
    page.changed_at = now
    page.state = WebPage.State.ACTIVE
    report.documents.append(document.id)
    return _page_ok(page, "changed")


def _page_document(page: WebPage) -> KnowledgeDocument | None:
    """The page's document, if it has one (without the stored bytes)."""
    return KnowledgeDocument.objects.filter(web_page=page).defer("raw").first()


def _page_ok(page: WebPage, outcome: str) -> str:
    page.failures = 0
    page.error = ""
    page.save()
    return outcome


def _page_failed(page: WebPage, reason: str, report: SyncReport) -> str:
    page.failures += 1
    page.error = reason
    report.errors.append(reason)
    if page.failures >= settings.WEB_RETIRE_AFTER_FAILURES and page.state == WebPage.State.ACTIVE:
        _page_retire(
            page, f"{reason} ({page.failures} failed syncs in a row, WEB_RETIRE_AFTER_FAILURES)"
        )
        return "retired"
    page.save()
    return "failed"


def _page_retire(page: WebPage, reason: str) -> None:
    """Stop serving a page: its document is deleted (no longer searched; the delete signal
    retires the cached answers that cited it). The page row stays, with the reason."""
    with transaction.atomic():
        KnowledgeDocument.objects.filter(web_page=page).delete()
        page.state = WebPage.State.RETIRED
        page.content_hash = page.etag = page.last_modified = ""
        page.anchors = {}
        page.error = reason
        page.save()


# --- Schedule ------------------------------------------------------------------------------


@task(queue_name=WEB_QUEUE, priority=5)
def web_sync_task() -> dict[str, int]:
    """Sync the web sources that are due, then queue the next run for the next due time."""
    totals: dict[str, int] = {}
    try:
        due = WebSource.objects.filter(next_sync_at__isnull=True) | WebSource.objects.filter(
            next_sync_at__lte=timezone.now()
        )
        for source in due.order_by("next_sync_at"):
            try:
                report = web_source_sync(source=source)
            except Exception:
                # One broken source must not stop the others nor the schedule.
                logger.exception("web source %s: sync failed", source.url)
                WebSource.objects.filter(id=source.id).update(
                    error="internal error during sync (see the worker log)",
                    next_sync_at=timezone.now()
                    + timedelta(seconds=settings.WEB_SYNC_INTERVAL_SECONDS),
                )
                continue
            for outcome, count in report.counts.items():
                totals[outcome] = totals.get(outcome, 0) + count
    finally:
        web_sync_ensure()
    return totals


def web_sync_ensure() -> bool:
    """Queue web_sync_task for the earliest due source unless a run is already waiting for that
    time or sooner; returns whether one was queued. Call after adding sources."""
    first = (
        WebSource.objects.order_by(F("next_sync_at").asc(nulls_first=True))
        .values_list("next_sync_at", flat=True)
        .first()
    )
    if first is None and not WebSource.objects.exists():
        return False
    now = timezone.now()
    run_after = max(first or now, now)
    # Only waiting runs count: a running one queues its successor when it ends, and a run left
    # RUNNING by a killed worker must not stop the schedule.
    waiting = (
        DBTaskResult.objects.filter(
            task_path=web_sync_task.module_path, status=TaskResultStatus.READY
        )
        .order_by(F("run_after").asc(nulls_first=True))
        .values_list("run_after", flat=True)
    )
    if waiting.exists() and (waiting[0] is None or waiting[0] <= run_after):
        return False
    # A source due sooner than the waiting run (just added) gets an earlier run; the later one
    # then finds nothing due and plans again.
    transaction.on_commit(lambda: web_sync_task.using(run_after=run_after).enqueue())
    return True
