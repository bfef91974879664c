"""HTTP side of the widget and the handoff: the loader script, the framed chat page, its visitor's
conversations, and a conversation's handoff state for the customer's page after a reload."""

from __future__ import annotations

import re
from uuid import UUID

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

from chatbot.customer_view import conversation_for_viewer
from chatbot.handoff_selectors import handoff_state
from chatbot.models import WidgetSite
from chatbot.selectors import conversation_detail, conversation_list
from chatbot.widget import VISITOR_TOKEN, frame_ancestors, visitor_session_key

COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")

# The widget's visible words by UI language; chat.js falls back to English for the rest.
STRINGS = {
    "en": {
        "title": "Help",
        "placeholder": "Ask about orders, shipping, returns…",
        "send": "Send",
        "stop": "Stop",
        "new": "New",
        "handoff": "Talk to a person",
        "open": "Chat with us",
        "close": "Close",
    },
    "de": {
        "title": "Hilfe",
        "placeholder": "Fragen zu Bestellung, Versand, Rückgabe…",
        "send": "Senden",
        "stop": "Stopp",
        "new": "Neu",
        "handoff": "Mit einem Menschen sprechen",
        "open": "Chat öffnen",
        "close": "Schließen",
        "waiting": "Wir holen eine Person dazu…",
        "joined": "{agent} ist jetzt im Gespräch.",
        "closed": "Das Gespräch mit {agent} ist beendet; der Assistent antwortet wieder.",
        "away": "Unser Team ist gerade nicht da. Antwort ab {when}.",
        "email_prompt": "Ihre E-Mail-Adresse (optional), damit wir antworten können:",
        "email_save": "Speichern",
        "email_saved": "Danke, wir schreiben Ihnen an diese Adresse.",
        "offer": "Mit einem Menschen sprechen?",
        "cancel": "Zurück zum Assistenten",
    },
    "fr": {
        "title": "Aide",
        "placeholder": "Commandes, livraison, retours…",
        "send": "Envoyer",
        "stop": "Arrêter",
        "new": "Nouveau",
        "handoff": "Parler à une personne",
        "open": "Discuter avec nous",
        "close": "Fermer",
        "waiting": "Nous cherchons une personne…",
        "joined": "{agent} a rejoint la conversation.",
        "closed": "La conversation avec {agent} est terminée ; l'assistant répond à nouveau.",
        "away": "Notre équipe est absente. Réponse à partir de {when}.",
        "email_prompt": "Votre e-mail (facultatif) pour que nous puissions répondre :",
        "email_save": "Enregistrer",
        "email_saved": "Merci, nous vous écrirons à cette adresse.",
        "offer": "Parler à une personne ?",
        "cancel": "Revenir à l'assistant",
    },
}


@require_GET
def widget_js(request: HttpRequest) -> FileResponse:
    """The one script a host page includes: it adds the chat bubble and the framed chat."""
    path = finders.find("chatbot/widget.js")
    if not path:
        raise Http404("widget.js is missing from the static files.")
    response = FileResponse(open(path, "rb"), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    return response


def _colour(value: str, default: str) -> str:
    # Written into a style element: only a plain #rrggbb gets there.
    return value if COLOUR.match(value or "") else default


def _site(key: str) -> WidgetSite:
    return get_object_or_404(WidgetSite, key=key, enabled=True)


@require_GET
@xframe_options_exempt  # framing is governed by the site's CSP frame-ancestors instead
def widget_page(request: HttpRequest, key: str) -> HttpResponse:
    """The chat as the widget's iframe shows it, in the site's language and colours."""
    site = _site(key)
    language = site.language if site.language in STRINGS else "en"
    strings = {**STRINGS["en"], **STRINGS[language]}
    response = render(
        request,
        "chatbot/widget.html",
        {
            "site": site,
            "strings": strings,
            "primary_color": _colour(site.primary_color, "#2f6f4e"),
            "text_color": _colour(site.text_color, "#ffffff"),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        },
    )
    # The app's CSP (django-csp) stays; only who may frame this page changes.
    response._csp_replace = {"frame-ancestors": frame_ancestors(site)}  # type: ignore[attr-defined]
    return response


def _visitor_key(request: HttpRequest, key: str) -> str:
    site = _site(key)
    visitor = request.headers.get("X-Chat-Visitor", "")
    if not VISITOR_TOKEN.match(visitor):
        raise Http404("No visitor.")
    return visitor_session_key(site=site, visitor=visitor)


def _detail(request: HttpRequest, session_key: str, conversation_id: UUID) -> JsonResponse:
    data = conversation_detail(session_key=session_key, conversation_id=conversation_id)
    if data is None:
        raise Http404("No such conversation in this session.")
    return JsonResponse(conversation_for_viewer(data, user=request.user))


@require_GET
def widget_conversations_json(request: HttpRequest, key: str) -> JsonResponse:
    """The widget visitor's conversations (the visitor token comes in X-Chat-Visitor)."""
    return JsonResponse(
        {"conversations": conversation_list(session_key=_visitor_key(request, key))}
    )


@require_GET
def widget_conversation_json(request: HttpRequest, key: str, conversation_id: UUID) -> JsonResponse:
    """One of the widget visitor's conversations with its messages."""
    return _detail(request, _visitor_key(request, key), conversation_id)


def _state(session_key: str, conversation_id: UUID) -> JsonResponse:
    data = handoff_state(session_key=session_key, conversation_id=conversation_id)
    if data is None:
        raise Http404("No such conversation in this session.")
    return JsonResponse(data)


@require_GET
def widget_handoff_json(request: HttpRequest, key: str, conversation_id: UUID) -> JsonResponse:
    """The widget visitor's conversation: its handoff status and agents' names."""
    return _state(_visitor_key(request, key), conversation_id)


@require_GET
def handoff_json(request: HttpRequest, conversation_id: UUID) -> JsonResponse:
    """This browser's conversation: its handoff status and agents' names (after a reload)."""
    if not request.session.session_key:
        raise Http404("No such conversation in this session.")
    return _state(request.session.session_key, conversation_id)
