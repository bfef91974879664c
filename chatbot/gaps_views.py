"""The gap inbox and curated answers: staff with the chatbot.review_gaps permission only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from chatbot import gaps
from chatbot.permissions import staff_permission_required
from retrieval.curated import CuratedError, curated_history, curated_withdraw
from retrieval.models import CacheEntry, CuratedAnswer, KnowledgeDocument

PERMISSION = "chatbot.review_gaps"


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


def _documents() -> list[KnowledgeDocument]:
    return list(
        KnowledgeDocument.objects.filter(status=KnowledgeDocument.Status.READY)
        .only("id", "title")
        .order_by("title")
    )


def _document_ids(request: HttpRequest) -> list[int]:
    try:
        return [int(v) for v in request.POST.getlist("documents") if v.strip()]
    except ValueError as exc:
        raise CuratedError("Choose sources from the list.") from exc


def _posted(request: HttpRequest) -> dict[str, Any]:
    """The curated-answer form as typed (shown again, whole, when it cannot be saved)."""
    return {
        "question": request.POST.get("question", ""),
        "phrasings": request.POST.get("phrasings", ""),
        "answer": request.POST.get("answer", ""),
        "documents": request.POST.getlist("documents"),
    }


@staff_permission_required(PERMISSION)
@require_http_methods(["GET", "POST"])
def gaps_page(request: HttpRequest) -> HttpResponse:
    """Groups of questions the knowledge lacks; POST dismisses a group."""
    if request.method == "POST":
        try:
            ids = gaps.parse_ids(request.POST.getlist("ids"))
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            n = gaps.gap_dismiss(ids=ids)
            messages.success(
                request, f"Dismissed {n} questions; the group returns when a new one joins it."
            )
        return redirect("gaps")
    groups, pending = gaps.gap_inbox()
    return render(
        request,
        "admin/chatbot/gaps.html",
        _context(
            request,
            "What the knowledge lacks",
            groups=groups,
            questions=sum(g.count for g in groups),
            upload_url=reverse("admin:retrieval_knowledgedocument_upload"),
            curated_count=CuratedAnswer.objects.count(),
            window_days=settings.GAP_WINDOW_DAYS,
            pending=pending,
        ),
    )


@staff_permission_required(PERMISSION)
@require_http_methods(["GET", "POST"])
def gap_curate_page(request: HttpRequest) -> HttpResponse:
    """Write a curated answer for a group (?ids=...), prefilled with its questions."""
    source = request.POST if request.method == "POST" else request.GET
    # A curated answer may be written without a group (the "Write one" link): no ids then.
    raw_ids = ",".join(source.getlist("ids")).strip(", ")
    try:
        ids = gaps.parse_ids(raw_ids) if raw_ids else []
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("gaps")
    form = {"question": "", "phrasings": "", "answer": "", "documents": []}
    if request.method == "POST":
        form = _posted(request)
        try:
            curated = gaps.gap_curate(
                ids=ids,
                question=form["question"],
                answer=form["answer"],
                phrasings=form["phrasings"],
                document_ids=_document_ids(request),
                author=request.user,
            )
        except CuratedError as exc:
            # Nothing is lost: the form comes back with what was typed.
            messages.error(request, str(exc))
        else:
            messages.success(request, "Curated answer saved; customers get it from now on.")
            return redirect("gap-curated", curated_id=curated.id)
    elif ids:
        questions = gaps.gap_questions(ids=ids)
        form["question"] = questions[0] if questions else ""
        form["phrasings"] = "\n".join(questions[1:])
    return render(
        request,
        "admin/chatbot/gaps_curate.html",
        _context(
            request,
            "Write a curated answer",
            form=form,
            ids=",".join(map(str, ids)),
            documents=_documents(),
            curated=None,
            history=[],
        ),
    )


@staff_permission_required(PERMISSION)
@require_http_methods(["GET"])
def gap_curated_list_page(request: HttpRequest) -> HttpResponse:
    """Every curated answer with its current version and hits."""
    rows = []
    for curated in CuratedAnswer.objects.all():
        history = curated_history(curated=curated)
        rows.append({"curated": curated, "current": history[0] if history else None})
    return render(
        request,
        "admin/chatbot/gaps_curated_list.html",
        _context(request, "Curated answers", rows=rows),
    )


@staff_permission_required(PERMISSION)
@require_http_methods(["GET", "POST"])
def gap_curated_page(request: HttpRequest, curated_id: int) -> HttpResponse:
    """Edit a curated answer (a new version) or withdraw it; its whole history below."""
    curated = get_object_or_404(CuratedAnswer, id=curated_id)
    history = curated_history(curated=curated)
    current = history[0] if history else None
    form = {
        "question": curated.question,
        "phrasings": "\n".join(current.phrasings[1:]) if current else "",
        "answer": current.answer if current else "",
        "documents": [str(s.get("document_id")) for s in (current.sources if current else [])],
    }
    if request.method == "POST":
        if request.POST.get("action") == "withdraw":
            curated_withdraw(curated=curated)
            messages.success(request, "Withdrawn: customers no longer get this answer.")
            return redirect("gap-curated", curated_id=curated.id)
        form = _posted(request)
        try:
            gaps.gap_curate(
                ids=[],
                question=form["question"],
                answer=form["answer"],
                phrasings=form["phrasings"],
                document_ids=_document_ids(request),
                author=request.user,
                curated=curated,
            )
        except CuratedError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Saved as a new version; the previous one is kept below.")
            return redirect("gap-curated", curated_id=curated.id)
    return render(
        request,
        "admin/chatbot/gaps_curate.html",
        _context(
            request,
            f"Curated answer #{curated.id}",
            form=form,
            ids="",
            documents=_documents(),
            curated=curated,
            history=history,
            served=CacheEntry.objects.filter(curated=curated, active=True).exists(),
        ),
    )
