"""The agents' inbox page at /admin/inbox/ (staff with the handoff permission)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chatbot.handoff_selectors import support_hours
from chatbot.inbox import can_handle_handoffs


@staff_member_required
@require_GET
def inbox_page(request: HttpRequest) -> HttpResponse:
    """Customers waiting for a person, live; take one, read the transcript, answer, close."""
    if not can_handle_handoffs(request.user):
        raise PermissionDenied("You need the 'Can take and answer handoffs' permission.")
    hours = support_hours()
    return render(
        request,
        "admin/chatbot/inbox.html",
        {
            **admin.site.each_context(request),
            "title": "Inbox",
            "hours": hours.spec if hours else "",
        },
    )
