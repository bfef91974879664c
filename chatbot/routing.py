"""WebSocket URL routes."""

from django.urls import path

from chatbot.consumers import ChatConsumer, WidgetConsumer
from chatbot.inbox import InboxConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/widget/<slug:key>/", WidgetConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
]
