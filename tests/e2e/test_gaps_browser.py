"""The gap inbox in Chromium: declined questions grouped by meaning, dismissed, answered by a
curated answer that the chat then serves; a thumbs-down on it asks why and reaches the inbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import Page, expect

from chatbot.models import Conversation, Message
from retrieval.models import CacheEntry
from routing.models import ModelTier
from tests.chatbot.test_gaps import CRYPTO, DOGS, GIFT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


def _declined(question: str) -> None:
    conversation = Conversation.objects.create(session_key="earlier-customer")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="I don't know.",
        standalone_question=question,
        abstained=True,
        abstain_reason="no_passages",
    )


def _group(page: Page, text: str):  # noqa: ANN202 - a Playwright Locator
    return page.locator(".gap-group").filter(has_text=text)


def test_gap_inbox_groups_dismisses_and_curates(page: Page, daphne_server) -> None:  # noqa: ANN001
    for question in GIFT + CRYPTO + DOGS:
        _declined(question)
    user = User.objects.create_user("reviewer", password="reviewer-pass-123", is_staff=True)
    # A knowledge editor: reviews gaps, and reads the dashboard that links to them.
    user.groups.add(Group.objects.get(name="Knowledge editors"))
    base = daphne_server.url

    page.goto(f"{base}/admin/login/?next=/admin/dashboard/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "reviewer-pass-123")
    page.click("input[type=submit]")
    page.click("text=Knowledge gaps", timeout=120_000)  # linked from the dashboard
    expect(page.locator(".gap-group")).to_have_count(3)
    for questions in (GIFT, CRYPTO, DOGS):
        group = _group(page, questions[0])
        expect(group).to_have_count(1)
        expect(group.locator(".gap-count")).to_have_text(str(len(questions)))
        for question in questions:
            expect(group.locator(".gap-examples")).to_contain_text(question)
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "gaps-inbox.png"), full_page=True)

    _group(page, DOGS[0]).locator(".gap-dismiss").click()
    expect(page.locator(".gap-group")).to_have_count(2)
    expect(_group(page, DOGS[0])).to_have_count(0)

    _group(page, GIFT[0]).locator(".gap-curate").click()
    expect(page.locator("#id_question")).to_have_value(GIFT[0])
    expect(page.locator("#id_phrasings")).to_contain_text(GIFT[1])
    page.fill("#id_answer", "Yes: gift wrapping costs **3 euros**; choose it at checkout.")
    page.click("#curate-form input[type=submit]")
    expect(page.locator("#history .version")).to_have_count(1)
    expect(page.locator("#curate")).to_contain_text("In service")
    page.goto(f"{base}/admin/gaps/")
    expect(page.locator(".gap-group")).to_have_count(1)

    # A customer asking one of the phrasings gets the curated answer, like a cached one: the
    # only tier points at a closed port, so no model can have answered.
    ModelTier.objects.update(enabled=False)
    ModelTier.objects.create(
        name="small", base_url="http://127.0.0.1:9/v1", model="none", enabled=True, order=10
    )
    customer = page.context.browser.new_context().new_page()
    customer.goto(base + "/")
    expect(customer.locator("#status")).to_have_text("online")
    customer.fill("#ask-input", GIFT[2])
    customer.press("#ask-input", "Enter")
    answer = customer.locator(".msg.assistant").last
    expect(answer.locator(".body")).to_contain_text("gift wrapping costs 3 euros", timeout=30_000)
    # Thumbs-down asks why; the reason is stored and the curated answer stays in service.
    answer.locator(".thumb[data-value='-1']").click()
    answer.locator(".reason[data-reason='outdated']").click()
    expect(answer.locator(".reason[data-reason='outdated']")).to_have_attribute(
        "aria-pressed", "true"
    )
    stored = Message.objects.filter(role=Message.Role.ASSISTANT, cached=True).get()
    assert (stored.feedback, stored.feedback_reason) == (-1, "outdated")
    assert CacheEntry.objects.filter(tier="curated", active=True).count() == 3
    customer.context.close()

    page.goto(f"{base}/admin/gaps/")
    back = _group(page, GIFT[2])
    expect(back).to_have_count(1)
    expect(back.locator(".gap-open")).to_have_text("1 open")
    expect(back).to_contain_text("outdated 1")
