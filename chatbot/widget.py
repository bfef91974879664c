"""The embeddable widget: which origins a site allows, the widget's socket and its visitor identity.

The widget is an iframe of this app's own page, so the chat runs on this origin (the same
chat.js, socket and session logic). A host site's page may frame it only from the site's
allowed origins (CSP `frame-ancestors`); its socket is accepted from this app's own hosts (the
iframe) or from those origins. The visitor is a random token kept in the iframe's storage: a
cookie would not survive as a third-party cookie, and the token never touches the session table.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.core.exceptions import ValidationError

from chatbot.models import WidgetSite

WIDGET_SOCKET_PATH = re.compile(r"^/ws/widget/([-a-zA-Z0-9_]+)/$")
VISITOR_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(?::\d{1,5})?$")


def parse_origins(text: str) -> list[str]:
    """The site's allowed origins, one a line; raises ValidationError naming a bad line."""
    origins = []
    for line in (text or "").splitlines():
        origin = line.strip().lower().rstrip("/")
        if not origin:
            continue
        if not _ORIGIN.match(origin):
            raise ValidationError(
                f"{line.strip()!r} is not an origin: write scheme, host and optional port, "
                "like https://www.example.com or http://localhost:8080 (no path)."
            )
        origins.append(origin)
    return origins


def site_origins(site: WidgetSite) -> list[str]:
    """A stored site's origins (lines that do not parse are left out rather than trusted)."""
    out = []
    for line in site.allowed_origins.splitlines():
        try:
            out.extend(parse_origins(line))
        except ValidationError:
            continue
    return out


def frame_ancestors(site: WidgetSite) -> list[str]:
    """The widget page's CSP `frame-ancestors` sources: only the site's origins may frame it."""
    return ["'self'", *site_origins(site)]


def visitor_session_key(*, site: WidgetSite, visitor: str) -> str:
    """The conversations' owner key for a widget visitor (a hash: the stored key is no bearer)."""
    digest = hashlib.sha256(f"{site.key}:{visitor}".encode()).hexdigest()
    return f"w-{digest[:60]}"


class SiteOriginValidator:
    """Lets a widget socket through from its site's allowed origins; every other socket goes to
    `otherwise` (the app's own origin check)."""

    def __init__(self, application: Any, *, otherwise: Any) -> None:
        self.application = application
        self.otherwise = otherwise
        self.matcher = OriginValidator(application, [])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Called per connection: to the app when a site allows its origin, else to `otherwise`."""
        match = WIDGET_SOCKET_PATH.match(scope.get("path", ""))
        origin = dict(scope.get("headers", [])).get(b"origin")
        if match and origin:
            try:
                parsed = urlparse(origin.decode("latin1"))
            except ValueError:
                parsed = None
            site = await WidgetSite.objects.filter(key=match[1], enabled=True).afirst()
            if (
                parsed is not None
                and site is not None
                and any(self.matcher.match_allowed_origin(parsed, o) for o in site_origins(site))
            ):
                return await self.application(scope, receive, send)
        return await self.otherwise(scope, receive, send)
