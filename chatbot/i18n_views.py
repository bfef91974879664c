"""The chat page's JavaScript translations (Django's catalogue), in the browser's or a widget's language."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.views.i18n import JavaScriptCatalog


class ChatCatalog(JavaScriptCatalog):
    """chat.js's strings: in the request's language (LocaleMiddleware), or the one in the URL (a
    widget site's own language, whatever the visitor's browser says)."""

    packages = ["chatbot"]

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The catalogue as a script; a language the page has no translation for gets English (the
        page's own words), as the template tags do."""
        language = kwargs.pop("language", None)
        if language is None:
            return super().get(request, *args, **kwargs)
        if language not in {code for code, _ in settings.LANGUAGES}:
            language = settings.LANGUAGE_CODE
        with translation.override(language):
            return super().get(request, *args, **kwargs)
