"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os
from urllib.parse import urlparse

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django_asgi_app = get_asgi_application()

# Imported after get_asgi_application() so that the app registry is ready.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator, WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402

from chatbot.health import warm_up_start  # noqa: E402
from chatbot.routing import websocket_urlpatterns  # noqa: E402
from chatbot.widget import SiteOriginValidator  # noqa: E402

http_app = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)


def _allowed_origins(scope: dict) -> list[str] | None:
    """ALLOWED_HOSTS as origins on the port the socket was opened on (the Host header's; 80 or
    443 when it names none); None when the Host header is malformed."""
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin1")
    try:
        port = urlparse("//" + host).port if host else None
    except ValueError:
        return None
    origins = []
    for name in settings.ALLOWED_HOSTS:
        if name == "*":
            origins.append("*")
            continue
        origins += [f"http://{name}:{port or 80}", f"https://{name}:{port or 443}"]
    return origins


def SameSiteOriginValidator(application):  # noqa: ANN001, ANN201, N802 - an ASGI app, like Channels'
    """Channels' AllowedHostsOriginValidator, but the Origin's port must also match: a page on
    another port of an allowed host (another app on localhost) is another site."""

    async def validate(scope, receive, send):  # noqa: ANN001, ANN202
        origins = _allowed_origins(scope)
        if origins is None:
            return await WebsocketDenier()(scope, receive, send)
        return await OriginValidator(application, origins)(scope, receive, send)

    return validate


application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Same-site pages only; a widget's socket also from its site's allowed origins.
        "websocket": SiteOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
            otherwise=SameSiteOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        ),
    }
)

# The models every question needs load now, beside the first connections, not in the first
# customer's wait; /readyz says "loading" until they are in.
warm_up_start()
