"""Knowledge admin: upload many files at once, watch each document's ingestion state."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from retrieval.cache import cache_approve, cache_stats
from retrieval.models import CacheEntry, CacheHit, Chunk, KnowledgeDocument, WebPage, WebSource
from retrieval.parsing import SUPPORTED_TYPES, DocumentRejected
from retrieval.services import IN_PROGRESS, document_reingest, document_upload


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files (Django's documented pattern)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(SUPPORTED_TYPES)}))
        # Empty files are reported by the upload service with the other reasons.
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(
        help_text=(
            f"{', '.join(sorted(SUPPORTED_TYPES))}; at most "
            f"{settings.INGEST_MAX_FILE_BYTES / 1_000_000:g} MB each. A file with the name of an "
            "existing document replaces it."
        )
    )
    title = forms.CharField(
        required=False,
        max_length=300,
        help_text="Optional, single file only; else taken from the file (title or first heading).",
    )


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(admin.ModelAdmin):
    list_display = (
        "title_or_name",
        "source_name",
        "status_badge",
        "progress",
        "version",
        "size_kb",
        "error_short",
        "updated_at",
    )
    list_filter = ("status", "source_type")
    search_fields = ("title", "source_name")
    fields = (
        "title",
        "source_name",
        "source_type",
        "status",
        "error",
        "chunks_done",
        "chunks_total",
        "version",
        "attempts",
        "size_bytes",
        "content_hash",
        "task_id",
        "heartbeat_at",
        "content",
    )
    readonly_fields = tuple(f for f in fields if f != "title")
    actions = ("reingest",)
    change_list_template = "admin/retrieval/knowledgedocument/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeDocument]:
        """Never load the stored files for a list."""
        return super().get_queryset(request).defer("raw")

    def get_urls(self) -> list:
        """Adds the upload page in front of the default admin URLs."""
        return [
            path(
                "upload/",
                self.admin_site.admin_view(self.upload_view),
                name="retrieval_knowledgedocument_upload",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """'Add' means uploading files."""
        return HttpResponseRedirect(reverse("admin:retrieval_knowledgedocument_upload"))

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        """Upload one or many files; each is checked, stored and queued for ingestion."""
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        # ?title= prefills the title (the gap inbox links here with a group's question).
        form = UploadForm(
            request.POST or None,
            request.FILES or None,
            initial={"title": request.GET.get("title", "")[:300]},
        )
        if request.method == "POST" and form.is_valid():
            files = form.cleaned_data["files"]
            title = form.cleaned_data["title"] if len(files) == 1 else ""
            for upload in files:
                self._upload_one(request, upload, title)
            return HttpResponseRedirect(reverse("admin:retrieval_knowledgedocument_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Upload knowledge documents",
        }
        return TemplateResponse(request, "admin/retrieval/knowledgedocument/upload.html", context)

    def _upload_one(self, request: HttpRequest, upload: Any, title: str) -> None:
        limit = settings.INGEST_MAX_FILE_BYTES
        try:
            # Django has no per-file limit: refuse before reading a big file into memory.
            if upload.size > limit:
                raise DocumentRejected(
                    f"{upload.name}: the file is {upload.size / 1_000_000:.1f} MB, over the "
                    f"{limit / 1_000_000:.1f} MB limit (INGEST_MAX_FILE_BYTES)"
                )
            document = document_upload(source_name=upload.name, data=upload.read(), title=title)
        except DocumentRejected as exc:
            messages.error(request, f"Not uploaded: {exc}")
            return
        if document.status == KnowledgeDocument.Status.READY:
            messages.info(
                request, f"{upload.name}: unchanged, already indexed (v{document.version})."
            )
        else:
            messages.success(request, f"{upload.name}: queued for ingestion (v{document.version}).")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        """The list refreshes itself while any ingestion is unfinished."""
        busy = KnowledgeDocument.objects.filter(status__in=IN_PROGRESS).exists()
        return super().changelist_view(request, {**(extra_context or {}), "auto_refresh": busy})

    @admin.action(description="Re-ingest selected documents", permissions=["change"])
    def reingest(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        """Index the stored files again (a failed document gets a fresh set of attempts)."""
        count = 0
        for document in queryset:
            if document.size_bytes:
                document_reingest(document=document)
                count += 1
        messages.success(request, f"{count} document(s) queued for ingestion.")

    @admin.display(description="title", ordering="title")
    def title_or_name(self, obj: KnowledgeDocument) -> str:
        return obj.title or obj.source_name

    @admin.display(description="state", ordering="status")
    def status_badge(self, obj: KnowledgeDocument) -> str:
        colours = {"ready": "#2e7d32", "failed": "#c62828"}
        return format_html(
            '<strong style="color:{}">{}</strong>',
            colours.get(obj.status, "#8a6d00"),
            obj.get_status_display(),
        )

    @admin.display(description="chunks done / total")
    def progress(self, obj: KnowledgeDocument) -> str:
        return f"{obj.chunks_done} / {obj.chunks_total}"

    @admin.display(description="size (KB)", ordering="size_bytes")
    def size_kb(self, obj: KnowledgeDocument) -> str:
        return f"{obj.size_bytes / 1000:.1f}"

    @admin.display(description="reason")
    def error_short(self, obj: KnowledgeDocument) -> str:
        return obj.error[:200]


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("document", "ordinal", "heading", "token_count")
    list_filter = ("document",)
    search_fields = ("text", "heading")
    exclude = ("embedding",)
    readonly_fields = ("document", "ordinal", "heading", "text", "token_count", "content_hash")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Chunks come from ingestion only."""
        return False


# --- Answer cache (issue 7) -------------------------------------------------------------------


class CacheHitInline(admin.TabularInline):
    model = CacheHit
    extra = 0
    can_delete = False
    fields = ("created_at", "question", "similarity", "guard_score", "message_id", "false_hit")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CacheEntry)
class CacheEntryAdmin(admin.ModelAdmin):
    """Cached answers with their hits and source documents; the page head shows the cache's figures."""

    list_display = (
        "question",
        "active",
        "shared",
        "hit_count",
        "last_hit_at",
        "false_hit_count",
        "source_documents",
        "tier",
        "created_at",
    )
    list_filter = ("active", ("shared_at", admin.EmptyFieldListFilter), "retired_reason", "tier")
    search_fields = ("question", "answer")
    readonly_fields = (
        "question",
        "answer",
        "sources",
        "document_versions",
        "tier",
        "score",
        "cost",
        "hit_count",
        "last_hit_at",
        "retired_reason",
        "shared_at",
        "approved_by",
        "producer_count",
        "created_at",
    )
    # The producers are keyed digests of session keys: counted, never shown.
    exclude = ("embedding", "producers")
    inlines = [CacheHitInline]
    actions = ["retire", "approve"]
    change_list_template = "admin/retrieval/cacheentry/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # entries come from accepted answers only

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .defer("embedding")
            .annotate(false_hits_n=Count("hits", filter=Q(hits__false_hit=True)))
        )

    @admin.display(description="shared", boolean=True, ordering="shared_at")
    def shared(self, obj: CacheEntry) -> bool:
        return obj.shared_at is not None or obj.curated_id is not None

    @admin.display(description="sessions that produced it")
    def producer_count(self, obj: CacheEntry) -> int:
        return len(obj.producers)

    @admin.display(description="false hits", ordering="false_hits_n")
    def false_hit_count(self, obj: CacheEntry) -> int:
        return obj.false_hits_n

    @admin.display(description="sources")
    def source_documents(self, obj: CacheEntry) -> str:
        titles = sorted({s.get("title", "") for s in obj.sources if s.get("title")})
        return ", ".join(titles)

    @admin.action(description="Take out of service", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(active=False, retired_reason="admin")
        self.message_user(request, f"{count} cache entries taken out of service.")

    @admin.action(description="Serve to every customer (approve)", permissions=["change"])
    def approve(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = cache_approve(
            entry_ids=list(queryset.values_list("id", flat=True)), user=request.user
        )
        self.message_user(request, f"{count} cache entries now served to every customer.")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra_context = {**(extra_context or {}), "cache_stats": cache_stats()}
        return super().changelist_view(request, extra_context=extra_context)


class WebSourceForm(forms.ModelForm):
    url = forms.URLField(
        max_length=2000, assume_scheme="https", help_text="A page or a sitemap.xml."
    )

    class Meta:
        model = WebSource
        fields = ("url",)

    def clean_url(self) -> str:
        """The URL as the fetcher will use it, or the reason it never would."""
        from retrieval.web import WebRefused, url_check

        try:
            return url_check(self.cleaned_data["url"])
        except WebRefused as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.display(description="document")
def _web_page_document(page: WebPage) -> str:
    document = KnowledgeDocument.objects.filter(web_page=page).only("id", "title").first()
    if document is None:
        return "-"
    url = reverse("admin:retrieval_knowledgedocument_change", args=[document.id])
    return format_html('<a href="{}">{}</a>', url, document.title)


class WebPageInline(admin.TabularInline):
    model = WebPage
    fields = ("url", "state", "document", "http_status", "failures", "fetched_at", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    document = staticmethod(_web_page_document)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # pages come from syncing the source


@admin.register(WebSource)
class WebSourceAdmin(admin.ModelAdmin):
    """A page or sitemap URL: saved, it is fetched by the task worker and re-synced on schedule."""

    form = WebSourceForm
    list_display = ("url", "kind", "active_pages", "last_synced_at", "next_sync_at", "error")
    readonly_fields = ("kind", "last_synced_at", "next_sync_at", "error")
    search_fields = ("url",)
    inlines = [WebPageInline]
    actions = ("sync_now",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebSource]:
        return (
            super()
            .get_queryset(request)
            .annotate(active_n=Count("pages", filter=Q(pages__state=WebPage.State.ACTIVE)))
        )

    @admin.display(description="active pages", ordering="active_n")
    def active_pages(self, obj: WebSource) -> int:
        return obj.active_n

    def save_model(self, request: HttpRequest, obj: WebSource, form: Any, change: bool) -> None:
        """A new or edited source is synced by the worker right away."""
        from retrieval.web_tasks import web_sync_ensure

        obj.next_sync_at = None
        super().save_model(request, obj, form, change)
        web_sync_ensure()
        messages.info(request, f"{obj.url}: queued for fetching by the task worker.")

    @admin.action(description="Sync selected sources now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[WebSource]) -> None:
        """Queue a sync of the sources on the worker (unchanged pages cost one request each)."""
        from retrieval.web_tasks import web_sync_ensure

        count = queryset.update(next_sync_at=None)
        web_sync_ensure()
        self.message_user(request, f"{count} web sources queued for syncing.")


@admin.register(WebPage)
class WebPageAdmin(admin.ModelAdmin):
    """The pages found through web sources: their state, document and last fetch."""

    list_display = ("url", "state", "document", "http_status", "failures", "fetched_at", "error")
    list_filter = ("state", "source")
    search_fields = ("url",)
    document = staticmethod(_web_page_document)
    readonly_fields = (
        "source",
        "url",
        "state",
        "document",
        "etag",
        "last_modified",
        "content_hash",
        "anchors",
        "failures",
        "http_status",
        "error",
        "fetched_at",
        "changed_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # pages come from syncing their source
