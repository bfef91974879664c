from django.contrib import admin

from retrieval.models import Chunk, KnowledgeDocument


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(admin.ModelAdmin):
    list_display = (
        "title",
        "source_name",
        "status",
        "chunks_done",
        "chunks_total",
        "version",
        "updated_at",
    )
    list_filter = ("status",)
    search_fields = ("title", "source_name")
    readonly_fields = ("content_hash", "version", "status", "error", "chunks_total", "chunks_done")


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("document", "ordinal", "heading", "token_count")
    search_fields = ("text", "heading")
    exclude = ("embedding",)
    readonly_fields = ("document", "ordinal", "heading", "text", "token_count", "content_hash")
