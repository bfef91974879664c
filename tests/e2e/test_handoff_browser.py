"""A customer's chat page and an agent's inbox page in Chromium, talking through a handoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from playwright.sync_api import Browser, Locator, Page, expect

from chatbot.models import Handoff, Message
from tests.e2e.conftest import OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _agent_page(chromium: Browser, base_url: str) -> Page:
    """A logged-in agent's browser (its own context: its own cookies) on the inbox page."""
    user = get_user_model().objects.create_user(
        username="ada", password="x", first_name="Ada", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="handle_handoff"))
    client = Client()
    client.force_login(user)
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}]
    )
    page = context.new_page()
    page.goto(base_url + "/admin/inbox/")
    expect(page.locator("#inbox-status")).to_have_text("live")
    return page


def _handed_to_ada(page: Page, agent: Page, base_url: str) -> Locator:
    """The customer asks for a person in words and the agent Ada takes the conversation; the
    customer's handoff banner."""
    page.goto(base_url + "/")
    expect(page.locator("#status")).to_have_text("online")

    # In words: recognised before any model work (no tier exists in these tests).
    page.fill("#ask-input", "Can I talk to a human?")
    page.press("#ask-input", "Enter")
    banner = page.locator("#handoff-banner")
    expect(banner).to_contain_text("getting a person", timeout=20_000)
    expect(page.locator("#handoff-button")).to_be_hidden()

    # The agent's inbox shows the waiting customer at once (no reload).
    row = agent.locator("#inbox-list li[data-status='waiting']")
    expect(row).to_have_count(1, timeout=20_000)
    row.click()
    expect(agent.locator("#transcript li.user")).to_contain_text("Can I talk to a human?")
    agent.get_by_role("button", name="Take this conversation").click()
    expect(banner).to_contain_text("Ada has joined", timeout=20_000)
    return banner


def test_customer_and_agent_talk_through_a_handoff(
    page: Page, chromium: Browser, daphne_server
) -> None:  # noqa: ANN001
    agent = _agent_page(chromium, daphne_server.url)
    banner = _handed_to_ada(page, agent, daphne_server.url)

    agent.fill(".inbox-compose textarea", "Hello, I am Ada. <b>How</b> can I help?")
    agent.press(".inbox-compose textarea", "Enter")
    said = page.locator(".msg.agent").last
    expect(said).to_contain_text("Hello, I am Ada. <b>How</b> can I help?", timeout=20_000)
    expect(said.locator(".agent-name")).to_have_text("Ada")
    expect(said.locator("b")).to_have_count(0)  # shown as text, never as markup

    # The customer's reply goes to the agent; the bot stays silent.
    page.fill("#ask-input", "My parcel never came.")
    page.press("#ask-input", "Enter")
    expect(agent.locator("#transcript li.user").last).to_contain_text(
        "My parcel never came.", timeout=20_000
    )
    expect(page.locator(".msg.user.pending")).to_have_count(0)
    assert not Message.objects.filter(role=Message.Role.ASSISTANT).exists()
    page.screenshot(path=str(OUTPUT / "handoff-customer.png"))
    agent.screenshot(path=str(OUTPUT / "handoff-inbox.png"))

    # After a reload the agent's words and the state are still there.
    page.reload()
    expect(page.locator(".msg.agent .agent-name")).to_have_text("Ada", timeout=20_000)
    expect(page.locator(".msg.agent .body")).to_contain_text("Hello, I am Ada.")
    expect(banner).to_contain_text("Ada has joined")

    agent.get_by_role("button", name="Close (the bot answers again)").click()
    expect(page.locator("#handoff-banner")).to_contain_text("has ended", timeout=20_000)
    expect(page.locator("#handoff-button")).to_be_visible()
    assert Handoff.objects.get().status == Handoff.Status.CLOSED
    agent.context.close()


def test_a_late_read_of_the_handoff_never_undoes_a_newer_change(
    page: Page, chromium: Browser, daphne_server
) -> None:  # noqa: ANN001
    agent = _agent_page(chromium, daphne_server.url)
    banner = _handed_to_ada(page, agent, daphne_server.url)

    # From now on the page's reads of the handoff state are answered late, each with what the
    # server said when it was asked: a reload reads it twice (on load, and as its socket opens).
    held: list = []
    page.route("**/handoff/", lambda route: held.append((route, route.fetch())))
    page.reload()
    expect(page.locator("#status")).to_have_text("online")
    for _ in range(100):
        if len(held) == 2:
            break
        page.wait_for_timeout(100)
    assert len(held) == 2
    agent.get_by_role("button", name="Close (the bot answers again)").click()
    expect(banner).to_contain_text("has ended", timeout=20_000)
    for route, said in held:
        with page.expect_event("requestfinished", lambda r: r.url.endswith("/handoff/")):
            route.fulfill(response=said)
    page.wait_for_timeout(500)  # what the page does with the answers
    expect(banner).to_contain_text("has ended", timeout=1_000)
    expect(page.locator("#handoff-button")).to_be_visible()
    agent.context.close()


@pytest.fixture(scope="module")
def closed_server(_sync_orm_beside_playwright, django_db_setup, django_db_blocker):  # noqa: ANN001, ANN201
    """Daphne whose support team is away now (open only tomorrow, UTC)."""
    from tests.e2e.conftest import LiveServer, _test_database_url

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%a")
    with django_db_blocker.unblock():
        server = LiveServer(
            _test_database_url(), extra_env={"SUPPORT_HOURS": f"{tomorrow} 09:00-17:00 UTC"}
        )
    server.start()
    yield server
    server.stop()
    server.log.close()


def test_outside_hours_the_customer_is_told_when_and_leaves_an_email(
    page: Page, closed_server
) -> None:  # noqa: ANN001
    page.goto(closed_server.url + "/")
    expect(page.locator("#status")).to_have_text("online")
    page.get_by_role("button", name="Talk to a person").click()
    banner = page.locator("#handoff-banner")
    expect(banner).to_contain_text("getting a person", timeout=20_000)
    weekday = (datetime.now(UTC) + timedelta(days=1)).strftime("%A")
    expect(banner.locator(".handoff-away")).to_contain_text("away right now")
    expect(banner.locator(".handoff-away")).to_contain_text(weekday)
    banner.locator("input[type=email]").fill("kim@example.com")
    banner.get_by_role("button", name="Save").click()
    expect(banner).to_contain_text("we will write to this address", timeout=20_000)
    handoff = Handoff.objects.get()
    assert handoff.email == "kim@example.com" and handoff.outside_hours

    # The customer stops waiting: the assistant is back.
    banner.get_by_role("button", name="Back to the assistant").click()
    expect(banner).to_contain_text("has ended", timeout=20_000)
    expect(page.get_by_role("button", name="Talk to a person")).to_be_visible()
    handoff.refresh_from_db()
    assert handoff.status == Handoff.Status.CLOSED
