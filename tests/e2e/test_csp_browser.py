"""The Content-Security-Policy blocks nothing the product itself uses: Chromium reports no
violation on the chat page (with a rendered answer), the admin login, the dashboard and a
passage page, and the header is on every page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _violations(page: Page) -> list[str]:
    found: list[str] = []
    page.on(
        "console",
        lambda message: (
            found.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return found


def test_no_page_of_the_product_violates_its_policy(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("csp-admin", "a@example.invalid", "csp-pass-4711")
    violations = _violations(page)

    response = page.goto(daphne_server.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#status")).to_have_text("online")
    page.fill("#ask-input", "How long do I have to return an item?")
    page.press("#ask-input", "Enter")
    answer = page.locator(".msg.assistant").last
    # The answer is rendered by marked and DOMPurify, both loaded as files.
    expect(answer.locator(".body p").first).to_be_visible(timeout=120_000)
    source = answer.locator("a[href^='/passages/']").first
    expect(source).to_be_visible(timeout=120_000)
    page.goto(daphne_server.url + source.get_attribute("href"))

    page.goto(daphne_server.url + "/admin/login/")
    page.fill("#id_username", "csp-admin")
    page.fill("#id_password", "csp-pass-4711")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()
    page.goto(daphne_server.url + "/admin/dashboard/")
    page.wait_for_load_state("networkidle")
    assert violations == []
