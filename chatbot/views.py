"""HTTP pages: the chat page, a passage in its document, a health check."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from retrieval.models import Chunk


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer chat; makes sure the browser has a session the socket can bind to."""
    if not request.session.session_key:
        request.session.save()
    return render(request, "chatbot/chat.html")


@require_GET
def passage_page(request: HttpRequest, chunk_id: int) -> HttpResponse:
    """A cited passage, highlighted within its document's other passages."""
    chunk = get_object_or_404(Chunk.objects.select_related("document"), id=chunk_id)
    chunks = chunk.document.chunks.order_by("ordinal")
    return render(
        request,
        "chatbot/passage.html",
        {"chunk": chunk, "document": chunk.document, "chunks": chunks},
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the process supervisor and monitoring."""
    return JsonResponse({"ok": True})
