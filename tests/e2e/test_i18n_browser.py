"""The chat page in the browser's language (German here), and the widget in its site's language."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from chatbot.models import Conversation, Message, WidgetSite

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STORED = {
    "content": "Innerhalb von 30 Tagen [1].",
    "tier": "small",
    "sources": [{"n": 1, "chunk_id": 1, "title": "Rückgabe", "heading": "", "page": 4}],
    "tokens_in": 120,
    "tokens_out": 9,
}


def _open_stored_answer(page: Page, url: str) -> None:
    page.goto(url + "/")
    key = next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")
    conversation = Conversation.objects.create(session_key=key, title="Rückgabe")
    Message.objects.create(conversation=conversation, role="user", content="Rückgabe?")
    Message.objects.create(conversation=conversation, role="assistant", **STORED)
    page.goto(f"{url}/?c={conversation.id}")
    expect(page.locator(".msg.assistant .sources")).to_be_visible(timeout=30_000)


def test_a_german_browser_gets_the_chat_page_in_german(chromium: Browser, daphne_server) -> None:  # noqa: ANN001
    context = chromium.new_context(locale="de-DE")
    page = context.new_page()
    try:
        _open_stored_answer(page, daphne_server.url)
        expect(page).to_have_title("Hilfe-Chat")
        assert page.locator("html").get_attribute("lang") == "de"
        expect(page.locator("#send")).to_have_text("Senden")
        expect(page.locator("#ask-input")).to_have_attribute(
            "placeholder", "Fragen zu Bestellung, Versand, Rückgabe…"
        )
        expect(page.locator("#handoff-button")).to_have_text("Mit einem Menschen sprechen")
        # chat.js's own words come from the JavaScript catalogue.
        answer = page.locator(".msg.assistant")
        expect(answer.locator(".sources")).to_contain_text("Quellen:")
        expect(answer.locator(".sources a")).to_have_text("[1] Rückgabe (Seite 4)")
        expect(answer.locator(".thumb").first).to_contain_text("Hilfreich")
        expect(page.locator("#status")).to_have_text("online")
        page.screenshot(path="test-output/chat-german.png", full_page=True)
    finally:
        context.close()


def test_an_english_browser_keeps_english(page: Page, daphne_server) -> None:  # noqa: ANN001
    _open_stored_answer(page, daphne_server.url)
    expect(page.locator("#send")).to_have_text("Send")
    expect(page.locator(".msg.assistant .sources")).to_contain_text("Sources:")
    expect(page.locator(".msg.assistant .sources a")).to_have_text("[1] Rückgabe (page 4)")


def test_a_german_widget_speaks_german_to_an_english_browser(page: Page, daphne_server) -> None:  # noqa: ANN001
    site = WidgetSite.objects.create(
        name="Shop", key="shop-de", allowed_origins="http://shop.invalid", language="de"
    )
    page.goto(f"{daphne_server.url}/widget/{site.key}/")
    expect(page.locator("#offline-banner")).to_have_text("Offline… verbinde neu.")
    assert page.evaluate("gettext('Sources:')") == "Quellen:"
    assert page.evaluate("gettext('Not helpful')") == "Nicht hilfreich"
