"""The widget in Chromium: a host page on another origin (another port, served by a tiny HTTP
server) embeds it with one script tag and gets a streamed answer; a host that is not allowed
gets neither the chat nor a socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Frame, Page, expect

from chatbot.models import Conversation, WidgetSite
from tests.conftest import free_port
from tests.e2e.conftest import OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every frame records the lengths the newest answer shows, so streaming is observable.
RECORD_GROWTH = """
window.__lengths = [];
new MutationObserver(() => {
  const bodies = document.querySelectorAll('.msg.assistant:not(.greeting) .body');
  if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""

# Opens a socket straight to the widget endpoint from the host page: "open" or "refused".
TRY_SOCKET = """
(url) => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); resolve("open"); };
  socket.onerror = () => resolve("refused");
})
"""


class HostSite:
    """A static page on its own loopback port that embeds the widget with one script tag."""

    def __init__(self, chat_url: str) -> None:
        html = (
            "<!doctype html><html><head><title>Shop</title></head><body>"
            "<h1>Larkspur shop</h1><p>Our products.</p>"
            f'<script src="{chat_url}/widget.js" data-site="shop" async></script>'
            "</body></html>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def widget_server(_sync_orm_beside_playwright, django_db_setup, django_db_blocker):  # noqa: ANN001, ANN201
    """Daphne as customers get it: no tier names, tokens or costs."""
    from tests.e2e.conftest import LiveServer, _test_database_url

    with django_db_blocker.unblock():
        server = LiveServer(_test_database_url(), extra_env={"CHAT_SHOW_DETAILS": "0"})
    server.start()
    yield server
    server.stop()
    server.log.close()


@pytest.fixture
def hosts(widget_server) -> Iterator[tuple[HostSite, HostSite]]:  # noqa: ANN001
    """An allowed host site and one that is not, each on its own port."""
    allowed, other = HostSite(widget_server.url), HostSite(widget_server.url)
    WidgetSite.objects.create(
        name="Shop",
        key="shop",
        allowed_origins=allowed.url,
        greeting="Hi! Ask me about returns and delivery.",
        primary_color="#7a2e8a",
    )
    yield allowed, other
    allowed.stop()
    other.stop()


def _widget_frame(page: Page) -> Frame:
    page.wait_for_function(
        "() => { const f = document.querySelector('iframe.chat-widget-frame');"
        " return f && f.contentWindow; }"
    )
    handle = page.wait_for_selector("iframe.chat-widget-frame", state="attached")
    frame = handle.content_frame()
    assert frame is not None
    return frame


def test_host_page_embeds_the_widget_and_gets_a_streamed_answer(
    page: Page, widget_server, hosts, small_tier, help_centre
) -> None:  # noqa: ANN001
    allowed, _ = hosts
    page.add_init_script(RECORD_GROWTH)
    page.goto(allowed.url + "/")
    frame = _widget_frame(page)
    bubble = frame.locator("#widget-open")
    expect(bubble).to_be_visible(timeout=20_000)
    iframe = page.locator("iframe.chat-widget-frame")
    assert iframe.bounding_box()["width"] < 100  # closed: only the bubble
    bubble.click()
    expect(frame.locator("#status")).to_have_text("online", timeout=20_000)
    assert iframe.bounding_box()["width"] > 300  # the host's loader resized the frame
    expect(frame.locator(".msg.greeting")).to_have_text("Hi! Ask me about returns and delivery.")
    # The site's colour.
    assert frame.evaluate(
        "getComputedStyle(document.querySelector('.chat-header')).backgroundColor"
    ) == ("rgb(122, 46, 138)")

    frame.fill("#ask-input", "How long do refunds take?")
    frame.press("#ask-input", "Enter")
    answer = frame.locator(".msg.assistant:not(.greeting)").last
    expect(answer.locator(".thumbs")).to_be_visible(timeout=120_000)  # shown at answer.end
    final = len(answer.locator(".body").inner_text())
    lengths = [n for n in frame.evaluate("window.__lengths") if n > 0]
    assert final > 0 and len(set(lengths)) >= 2, lengths  # grew in steps: streamed
    # A customer sees the answer and its sources, not tiers, tokens or costs.
    expect(answer.locator(".details")).to_have_count(0)
    assert "small" not in answer.inner_text()
    conversation = Conversation.objects.get()
    assert conversation.site.key == "shop"
    page.screenshot(path=str(OUTPUT / "widget-answer.png"))

    # Another page load on the host site: the chat is still open with the conversation.
    page.reload()
    frame = _widget_frame(page)
    expect(frame.locator(".msg.user")).to_have_text("How long do refunds take?", timeout=20_000)
    expect(frame.locator(".msg.assistant:not(.greeting)")).to_have_count(1)
    expect(frame.locator("#ask-input")).to_be_visible()

    # The page's own origin may also open the widget's socket (a site it allows).
    visitor = "e2e-visitor-0123456789"
    ws = widget_server.url.replace("http://", "ws://") + f"/ws/widget/shop/?visitor={visitor}"
    assert page.evaluate(TRY_SOCKET, ws) == "open"


def test_a_host_that_is_not_allowed_gets_no_chat_and_no_socket(
    page: Page, widget_server, hosts
) -> None:  # noqa: ANN001
    _, other = hosts
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text))
    page.goto(other.url + "/")
    frame = _widget_frame(page)
    # The browser refuses to show the framed chat (CSP frame-ancestors).
    page.wait_for_timeout(2000)
    assert frame.locator("#ask-input").count() == 0
    assert any("frame-ancestors" in text for text in refusals), refusals
    visitor = "e2e-visitor-0123456789"
    ws = widget_server.url.replace("http://", "ws://") + f"/ws/widget/shop/?visitor={visitor}"
    assert page.evaluate(TRY_SOCKET, ws) == "refused"


def test_an_agents_reply_opens_the_folded_widget(
    page: Page, chromium: Browser, widget_server, hosts
) -> None:  # noqa: ANN001
    from tests.e2e.test_handoff_browser import _agent_page

    allowed, _ = hosts
    page.goto(allowed.url + "/")
    frame = _widget_frame(page)
    frame.locator("#widget-open").click()
    expect(frame.locator("#status")).to_have_text("online", timeout=20_000)
    frame.get_by_role("button", name="Talk to a person").click()
    expect(frame.locator("#handoff-banner")).to_contain_text("getting a person", timeout=20_000)
    frame.locator("#widget-close").click()
    iframe = page.locator("iframe.chat-widget-frame")
    page.wait_for_function(
        "() => document.querySelector('iframe.chat-widget-frame').getBoundingClientRect().width < 100"
    )

    agent = _agent_page(chromium, widget_server.url)
    row = agent.locator("#inbox-list li[data-status='waiting']")
    expect(row).to_contain_text("Shop", timeout=20_000)  # the site it came from
    row.click()
    agent.get_by_role("button", name="Take this conversation").click()
    agent.fill(".inbox-compose textarea", "Hi, Ada here.")
    agent.press(".inbox-compose textarea", "Enter")
    expect(frame.locator(".msg.agent .body")).to_have_text("Hi, Ada here.", timeout=20_000)
    page.wait_for_function(
        "() => document.querySelector('iframe.chat-widget-frame').getBoundingClientRect().width > 300"
    )
    assert iframe.bounding_box()["width"] > 300
    agent.context.close()
