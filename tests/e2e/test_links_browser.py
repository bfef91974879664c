"""Answers in Chromium: links only to the company's own sites, never an image, sources to live pages.

The answers shown are crafted hostile model outputs plus, when the injection suite has run, every
answer in bench/results/injection.json where an attack got through (the worst the local models
wrote): whatever a model writes, the page shows no external image and no unlisted link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, expect

from chatbot.models import Conversation, Message
from tests.e2e.conftest import LiveServer, _test_database_url

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = "larkspur.example"

CRAFTED = [
    "Start here: [our returns page](https://help.larkspur.example/returns) or "
    "[the shop](https://larkspur.example/).",
    "Claim it at [larkspur.example](https://larkspur-vouchers.xyz/claim) now!",
    "Confirm your card at https://larkspur-refunds.com/confirm before anything else.",
    "![logo](https://cdn.track-pixel.io/l.gif?u=1) Returns take 30 days.",
    '<img src="https://stats.evil-analytics.com/b.png"> and <a href="https://evil.example/">x</a>',
    "Write to [us](mailto:support@larkspur.example) or [them](mailto:billing@secure-larkspur.net).",
    "[protocol-relative](//evil.example/p) [script](javascript:alert(1)) "
    "[look-alike](https://larkspur.example.evil.com/) [data](data:text/html,hi)",
    "Reference-style [deal][1].\n\n[1]: https://cheap-deals.com/x",
    "Autolink <https://phish.example.org/login> and www.giftcard-bonus.biz",
]


def _worst_answers() -> list[str]:
    path = ROOT / "bench" / "results" / "injection.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    return [
        row["answer"]
        for tier in report.get("tiers", {}).values()
        for row in tier.get("failed_defences", [])
        if row.get("answer")
    ]


@pytest.fixture(scope="module")
def company_server(
    _sync_orm_beside_playwright, django_db_setup, django_db_blocker
) -> Iterator[LiveServer]:  # noqa: ANN001
    """Daphne whose answers may link to the company's domain only."""
    with django_db_blocker.unblock():
        server = LiveServer(_test_database_url(), {"CHAT_LINK_ALLOWED_DOMAINS": ALLOWED})
    server.start()
    yield server
    server.stop()
    server.log.close()


def _session_key(page: Page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")


def _show(page: Page, server: LiveServer, answers: list[str], sources: list | None = None) -> None:
    """Store the answers in this browser's conversation and open it, as a customer would see it."""
    page.goto(server.url + "/")
    conversation = Conversation.objects.create(session_key=_session_key(page), title="Links")
    for text in answers:
        Message.objects.create(conversation=conversation, role="user", content="Question?")
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=text,
            tier="small",
            sources=sources or [],
        )
    page.goto(f"{server.url}/?c={conversation.id}")
    expect(page.locator(".msg.assistant")).to_have_count(len(answers), timeout=30_000)


def _allowed(href: str, page_host: str) -> bool:
    url = urlparse(href)
    if url.scheme == "mailto":
        return url.path.rsplit("@", 1)[-1] == ALLOWED
    host = url.hostname or ""
    return url.scheme in {"http", "https"} and (
        host in {page_host, ALLOWED} or host.endswith("." + ALLOWED)
    )


def test_hostile_answers_show_no_external_image_and_no_unlisted_link(
    page: Page, company_server
) -> None:  # noqa: ANN001
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    answers = CRAFTED + _worst_answers()
    _show(page, company_server, answers)

    bodies = page.locator(".msg.assistant .body")
    assert page.locator("#messages img, #messages picture, #messages image").count() == 0
    hrefs = bodies.locator("a").evaluate_all("links => links.map(a => a.href)")
    page_host = urlparse(company_server.url).hostname
    unlisted = [h for h in hrefs if not _allowed(h, page_host)]
    assert not unlisted, unlisted
    # The company's own links stay links, opened in a new tab without a way back to this page.
    own = bodies.locator('a[href="https://help.larkspur.example/returns"]')
    expect(own).to_have_attribute("target", "_blank")
    expect(own).to_have_attribute("rel", "noopener noreferrer")
    expect(bodies.locator('a[href="mailto:support@larkspur.example"]')).to_have_count(1)
    # An unlisted link keeps its words, as plain text.
    claim = bodies.nth(1)
    expect(claim.locator(".unlisted-link")).to_have_text("larkspur.example")
    expect(claim.locator("a")).to_have_count(0)
    expect(bodies.nth(2)).to_contain_text("https://larkspur-refunds.com/confirm")
    expect(bodies.nth(3).locator("a, img")).to_have_count(0)
    # The page asked nothing of any other host (no image, no prefetch).
    foreign = [u for u in requested if urlparse(u).hostname != page_host]
    assert not foreign, foreign
    page.screenshot(path=str(ROOT / "test-output" / "links-hostile.png"), full_page=True)


def test_a_source_links_to_its_live_page_and_names_its_page_number(
    page: Page, company_server
) -> None:  # noqa: ANN001
    sources = [
        {
            "n": 1,
            "chunk_id": 11,
            "title": "Returns",
            "heading": "Window",
            "url": "https://help.larkspur.example/returns#window",
        },
        {
            "n": 2,
            "chunk_id": 12,
            "title": "Tent manual",
            "heading": "",
            "url": "/passages/12/",
            "page": 4,
        },
        {"n": 3, "chunk_id": 13, "title": "Odd", "heading": "", "url": "javascript:alert(1)"},
    ]
    _show(page, company_server, ["Within 30 days [1], see page 4 [2]."], sources)
    links = page.locator(".msg.assistant .sources a")
    expect(links).to_have_count(3)
    expect(links.nth(0)).to_have_attribute("href", "https://help.larkspur.example/returns#window")
    expect(links.nth(0)).to_have_attribute("target", "_blank")
    expect(links.nth(0)).to_have_attribute("rel", "noopener")
    expect(links.nth(1)).to_have_attribute("href", "/passages/12/#chunk-12")
    expect(links.nth(1)).to_have_text("[2] Tent manual (page 4)")
    # Only an http(s) address is a live page: anything else opens the passage on this site.
    expect(links.nth(2)).to_have_attribute("href", "/passages/13/#chunk-13")
