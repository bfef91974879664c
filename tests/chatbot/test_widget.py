"""The widget's server side: the loader script, the framed page's CSP, the socket's origin check,
the visitor's own conversations, and what customers see of an answer's details."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatbot.models import Conversation, Message, WidgetSite

pytestmark = [pytest.mark.django_db(transaction=True)]

VISITOR = "visitor-token-0123456789"


def _site(**fields: object) -> WidgetSite:
    return WidgetSite.objects.create(
        name="Shop",
        key="shop",
        allowed_origins="https://shop.example\nhttp://localhost:8081",
        greeting="Hello from the shop",
        language="de",
        **fields,
    )


def test_loader_script_and_widget_page() -> None:
    _site()
    client = Client()
    script = client.get("/widget.js")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/javascript")
    assert b"data-site" in b"".join(script.streaming_content)
    page = client.get("/widget/shop/")
    assert page.status_code == 200
    policy = [d.strip() for d in page["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'self' https://shop.example http://localhost:8081" in policy
    assert "script-src 'self'" in policy  # the rest of the app's policy still holds
    # Every other page still refuses to be framed.
    assert "frame-ancestors 'none'" in client.get("/").headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in page  # the CSP governs framing instead
    html = page.content.decode()
    assert "Hello from the shop" in html and "Senden" in html  # greeting, German labels
    assert 'data-ws-path="/ws/widget/shop/"' in html


def test_disabled_or_unknown_sites_have_no_widget() -> None:
    _site(enabled=False)
    client = Client()
    assert client.get("/widget/shop/").status_code == 404
    assert client.get("/widget/nope/").status_code == 404


def test_admin_form_refuses_origins_with_paths() -> None:
    from chatbot.handoff_admin import WidgetSiteForm

    form = WidgetSiteForm(
        data={
            "name": "Shop",
            "key": "shop",
            "allowed_origins": "https://shop.example/path",
            "language": "en",
            "primary_color": "#112233",
            "text_color": "#ffffff",
            "enabled": True,
        }
    )
    assert not form.is_valid() and "allowed_origins" in form.errors
    form = WidgetSiteForm(
        data={**form.data, "allowed_origins": "HTTPS://Shop.Example/\n\nhttp://localhost:8081"}
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["allowed_origins"] == "https://shop.example\nhttp://localhost:8081"


async def _widget_socket(origin: bytes, visitor: str = VISITOR) -> WebsocketCommunicator:
    from chatbot.asgi import application

    return WebsocketCommunicator(
        application, f"/ws/widget/shop/?visitor={visitor}", headers=[(b"origin", origin)]
    )


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (b"https://shop.example", True),  # the site's page itself
        (b"http://localhost:8081", True),
        (b"http://127.0.0.1", True),  # the widget's own iframe (this app's host)
        (b"https://evil.example", False),
        (b"http://localhost:9999", False),  # an allowed host on another port is another origin
        (b"http://shop.example", False),  # wrong scheme
    ],
)
async def test_widget_socket_origins(origin: bytes, accepted: bool) -> None:
    await sync_to_async(_site)()
    communicator = await _widget_socket(origin)
    connected, _ = await communicator.connect()
    assert connected is accepted
    await communicator.disconnect()


async def test_chat_socket_does_not_take_widget_origins() -> None:
    from chatbot.asgi import application

    await sync_to_async(_site)()
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"https://shop.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_widget_socket_needs_a_visitor_token() -> None:
    await sync_to_async(_site)()
    communicator = await _widget_socket(b"https://shop.example", visitor="short")
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_visitor_owns_widget_conversations_and_customers_see_no_costs(settings) -> None:  # noqa: ANN001
    settings.CHAT_SHOW_DETAILS = False
    settings.SUPPORT_HOURS = ""
    site = await sync_to_async(_site)()
    communicator = await _widget_socket(b"https://shop.example")
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "handoff"})
    status = await communicator.receive_json_from(timeout=10)
    assert status["type"] == "handoff.status"
    conversation = await Conversation.objects.aget(id=status["conversation_id"])
    assert conversation.site_id == site.id and conversation.session_key.startswith("w-")
    assert VISITOR not in conversation.session_key  # stored hashed: the key is no bearer
    await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Within 30 days.",
        tier="large",
        tokens_in=10,
        tokens_out=5,
    )
    await communicator.disconnect()

    def fetch(visitor: str) -> tuple[int, dict]:
        client = Client()
        base = "/widget/shop/api/conversations/"
        listing = client.get(base, HTTP_X_CHAT_VISITOR=visitor)
        detail = client.get(f"{base}{conversation.id}/", HTTP_X_CHAT_VISITOR=visitor)
        return detail.status_code, {
            "list": listing.json(),
            **(detail.json() if detail.status_code == 200 else {}),
        }

    code, data = await sync_to_async(fetch)(VISITOR)
    assert code == 200 and [c["id"] for c in data["list"]["conversations"]] == [
        str(conversation.id)
    ]
    [answer] = data["messages"]
    assert answer["content"] == "Within 30 days."
    assert not {"tier", "usage", "cost", "attempts"} & answer.keys()
    code, _ = await sync_to_async(fetch)("another-visitor-0123456789")
    assert code == 404
