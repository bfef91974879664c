"""HTTP pages: the chat page, the session's conversations as JSON, a passage in its document, health,
readiness and metrics."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from chatbot import health, metrics
from chatbot.customer_view import conversation_for_viewer
from chatbot.selectors import conversation_detail, conversation_list
from retrieval.models import Chunk, PassageMove


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer chat; makes sure the browser has a session the socket can bind to."""
    if not request.session.session_key:
        request.session.save()
    return render(request, "chatbot/chat.html", {"max_chars": settings.CHAT_MAX_MESSAGE_CHARS})


def _session_key(request: HttpRequest) -> str:
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key or ""


@require_GET
def conversations_json(request: HttpRequest) -> JsonResponse:
    """This browser's conversations for the side list, most recent first."""
    return JsonResponse({"conversations": conversation_list(session_key=_session_key(request))})


@require_GET
def conversation_json(request: HttpRequest, conversation_id: UUID) -> JsonResponse:
    """One of this browser's conversations with its messages; 404 for anyone else's."""
    data = conversation_detail(session_key=_session_key(request), conversation_id=conversation_id)
    if data is None:
        raise Http404("No such conversation in this session.")
    return JsonResponse(conversation_for_viewer(data, user=request.user))


@require_GET
def passage_page(request: HttpRequest, chunk_id: int) -> HttpResponse:
    """A cited passage, highlighted within its document's other passages; a passage of an
    earlier version that the current one kept unchanged leads to it there."""
    chunk = Chunk.objects.select_related("document").filter(id=chunk_id).first()
    if chunk is None:
        move = get_object_or_404(PassageMove, old_id=chunk_id)
        if not Chunk.objects.filter(id=move.new_id).exists():
            raise Http404("No such passage.")
        return redirect("passage", chunk_id=move.new_id)
    # The passages of the cited version only.
    chunks = chunk.document.chunks.filter(version=chunk.version).order_by("ordinal")
    return render(
        request,
        "chatbot/passage.html",
        {"chunk": chunk, "document": chunk.document, "chunks": chunks},
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the process supervisor and monitoring."""
    return JsonResponse({"ok": True})


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness for a load balancer: 200 when the database, every enabled local model server
    and a task worker answer and this process has loaded its models; 503 naming what failed."""
    checks = await health.readiness()
    failed = [c.name for c in checks if not c.ok]
    body = {"ready": not failed, "failed": failed, "checks": {c.name: c.as_dict() for c in checks}}
    return JsonResponse(body, status=503 if failed else 200)


@require_GET
def metrics_page(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for the addresses in METRICS_ALLOWED_ADDRESSES only."""
    if not metrics.address_allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse("Forbidden: not in METRICS_ALLOWED_ADDRESSES.\n", status=403)
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
