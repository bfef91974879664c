"""The chat page in Chromium: streaming in steps, stop, reload with history, safe rendering, offline queue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chatbot.models import Conversation, Message
from routing.models import ModelTier

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
XSS = "<img src=x onerror=alert(1)>"

# Records every text length the newest answer shows, so "grows in steps" is observable.
RECORD_GROWTH = """
window.__lengths = [];
new MutationObserver(() => {
  const bodies = document.querySelectorAll('.msg.assistant .body');
  if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


# Stops the answer from inside the page the moment it shows its first words (or, for
# "escape", the moment the answer starts): a poll from the test process can come after a
# short answer already ended.
STOP_EARLY = """
window.__stopped = false;
new MutationObserver(() => {
  if (window.__stopped || !window.__stopWith) return;
  const answers = document.querySelectorAll('.msg.assistant[data-message-id]');
  const last = answers[answers.length - 1];
  if (!last || last.dataset.messageId === window.__stopAfter) return;
  if (window.__stopWith === "click") {
    if (!last.querySelector('.body').textContent.trim()) return;
    document.getElementById('stop').click();
  } else {
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
  }
  window.__stopped = true;
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def _session_key(page: Page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")


def _watch_dialogs(page: Page) -> list[str]:
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:  # noqa: ANN001
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def _ask(page: Page, text: str) -> None:
    page.fill("#ask-input", text)
    page.press("#ask-input", "Enter")


def test_answer_streams_in_steps_with_provenance(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    page.add_init_script(RECORD_GROWTH)
    page.goto(daphne_server.url + "/")
    expect(page.locator("#status")).to_have_text("online")
    _ask(page, "How long do I have to return an item?")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".details")).to_be_visible(timeout=120_000)

    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    final = len(answer.locator(".body").inner_text())
    assert len(set(lengths)) >= 2, f"the answer appeared in one step: {lengths}"
    assert min(lengths) < max(lengths)
    assert final > 0

    answer.locator(".details summary").click()
    expect(answer.locator(".details")).to_contain_text("small")
    expect(answer.locator(".details")).to_contain_text("Tokens")
    source = answer.locator(".sources a").first
    expect(source).to_have_attribute("href", re.compile(r"^/passages/\d+/#chunk-\d+$"))
    # Thumbs are stored on the message.
    answer.locator(".thumb[data-value='1']").click()
    expect(answer.locator(".thumb[data-value='1']")).to_have_attribute("aria-pressed", "true")
    message = Message.objects.get(id=answer.get_attribute("data-message-id"))
    assert message.feedback == 1
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "chat-answer.png"), full_page=True)

    # A new conversation starts empty; both stay in the side list and reopen.
    first_id = answer.evaluate("() => new URL(location.href).searchParams.get('c')")
    page.click("#new-conversation")
    expect(page.locator(".msg")).to_have_count(0)
    _ask(page, "How long does standard delivery take?")
    expect(page.locator(".msg.assistant .details")).to_be_visible(timeout=120_000)
    expect(page.locator("#conversations a")).to_have_count(2)
    assert Conversation.objects.filter(session_key=_session_key(page)).count() == 2
    page.locator(f"#conversations a[data-id='{first_id}']").click()
    expect(page.locator(".msg.user")).to_have_text(["How long do I have to return an item?"])


def test_stop_button_and_escape_stop_the_answer(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    ModelTier.objects.filter(name="small").update(max_answer_tokens=600)
    page.add_init_script(STOP_EARLY)
    page.goto(daphne_server.url + "/")
    expect(page.locator("#status")).to_have_text("online")
    page.evaluate("window.__stopWith = 'click'")
    _ask(page, "Explain in great detail, step by step, how returns and refunds work.")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".state")).to_have_text("stopped", timeout=120_000)
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    message = Message.objects.get(id=answer.get_attribute("data-message-id"))
    assert message.status == Message.Status.STOPPED
    assert message.content

    page.evaluate(
        "window.__stopAfter = document.querySelector('.msg.assistant').dataset.messageId;"
        "window.__stopWith = 'escape'; window.__stopped = false;"
    )
    _ask(page, "Tell me everything about delivery, step by step, in great detail.")
    second = page.locator(".msg.assistant").nth(1)
    expect(second.locator(".state")).to_have_text("stopped", timeout=120_000)
    expect(page.locator("#send")).to_be_visible()
    stopped = Message.objects.get(id=second.get_attribute("data-message-id"))
    assert stopped.status == Message.Status.STOPPED
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "chat-stopped.png"), full_page=True)


def test_reload_shows_history_and_html_renders_as_text(
    page: Page, daphne_server, help_centre
) -> None:  # noqa: ANN001
    dialogs = _watch_dialogs(page)
    page.goto(daphne_server.url + "/")
    conversation = Conversation.objects.create(
        session_key=_session_key(page), title=f"Gift card {XSS}"
    )
    Message.objects.create(
        conversation=conversation, role="user", content=f"What is {XSS} on my card?"
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=f"The **code** is {XSS} and <script>alert(2)</script> [click](javascript:alert(3))",
        tier="small",
        sources=[{"n": 1, "chunk_id": 1, "title": XSS, "heading": ""}],
    )
    page.reload()
    link = page.locator("#conversations a", has_text="Gift card")
    expect(link).to_have_count(1)
    link.click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".body strong")).to_have_text("code")  # markdown still renders
    expect(answer.locator(".body")).to_contain_text(XSS)
    expect(answer.locator(".body")).to_contain_text("<script>alert(2)</script>")
    expect(page.locator(".msg.user").last).to_contain_text(XSS)
    expect(answer.locator(".sources")).to_contain_text(XSS)
    assert page.locator(".messages img, .messages script").count() == 0
    assert answer.locator("a[href^='javascript']").count() == 0

    # Reloading keeps the conversation (its id is in the address).
    page.reload()
    expect(page.locator(".msg.assistant").last.locator(".body")).to_contain_text(XSS)
    expect(page.locator("#chat-title")).to_contain_text("Gift card")

    # A document holding the same markup: its passage page shows it as text too.
    from retrieval.models import Chunk

    chunk = Chunk.objects.get(text__contains="onerror")
    page.goto(f"{daphne_server.url}/passages/{chunk.id}/")
    expect(page.locator(f"#chunk-{chunk.id}")).to_contain_text(XSS)
    assert page.locator("main img").count() == 0
    assert dialogs == []
    page.goto(f"{daphne_server.url}/?c={conversation.id}")
    expect(page.locator(".msg.assistant")).to_have_count(1)
    page.screenshot(path=str(OUTPUT / "chat-history-xss.png"), full_page=True)
    assert dialogs == []


def test_a_message_typed_offline_is_sent_once_after_reconnecting(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    page.goto(daphne_server.url + "/")
    expect(page.locator("#status")).to_have_text("online")
    _ask(page, "How long does standard delivery take?")
    expect(page.locator(".msg.assistant .details")).to_be_visible(timeout=120_000)

    daphne_server.stop()
    expect(page.locator("#offline-banner")).to_be_visible(timeout=10_000)
    question = "Do you deliver on Saturdays?"
    _ask(page, question)
    expect(page.locator(".msg.user.pending")).to_have_text(question)
    page.screenshot(path=str(OUTPUT / "chat-offline.png"), full_page=True)
    daphne_server.start()

    expect(page.locator("#offline-banner")).to_be_hidden(timeout=30_000)
    expect(page.locator(".msg.assistant")).to_have_count(2, timeout=120_000)
    expect(page.locator(".msg.assistant").last.locator(".details")).to_be_visible(timeout=120_000)
    expect(page.locator(".msg.user.pending")).to_have_count(0)
    assert Message.objects.filter(role="user", content=question).count() == 1
    # Both questions went to the same conversation.
    assert Conversation.objects.count() == 1
    assert page.evaluate("localStorage.getItem('chat.outbox')") == "[]"


# Counts every <img> or <script> element that ever enters the message list, even for one frame.
RECORD_MARKUP = """
window.__injected = 0;
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) {
    const inMessages = r.target.nodeType === 1 && r.target.closest('#messages');
    if (inMessages && n.nodeType === 1 && (n.matches('img, script') || n.querySelector('img, script'))) {
      window.__injected++;
    }
  }
}).observe(document, {subtree: true, childList: true});
"""


def test_a_streamed_answer_with_markup_renders_as_text(
    page: Page, daphne_server, help_centre
) -> None:  # noqa: ANN001
    """A model that streams HTML, split across deltas (a fault-injecting OpenAI-compatible server)."""
    from tests.routing.fault_server import FaultServer

    hostile = FaultServer()
    try:
        ModelTier.objects.create(
            name="hostile",
            base_url=hostile.base_url,
            model=f"ok:The **balance** code is {XSS} and <script>alert(2)</script> here.",
            context_window=4096,
            max_answer_tokens=64,
            threshold=0.0,
            order=10,
            enabled=True,
        )
        dialogs = _watch_dialogs(page)
        page.add_init_script(RECORD_MARKUP)
        page.goto(daphne_server.url + "/")
        expect(page.locator("#status")).to_have_text("online")
        _ask(page, "How do I check my gift card balance?")
        answer = page.locator(".msg.assistant").last
        expect(answer.locator(".details")).to_be_visible(timeout=60_000)
        assert hostile.requests, "the answer came from the hostile tier"
        expect(answer.locator(".body")).to_contain_text(XSS)
        expect(answer.locator(".body strong")).to_have_text("balance")
        assert page.evaluate("window.__injected") == 0
        assert dialogs == []
        page.screenshot(path=str(OUTPUT / "chat-streamed-xss.png"), full_page=True)
    finally:
        hostile.stop()


def test_a_confident_answer_stays_and_an_unsure_one_escalates_visibly(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    """The real small tier first; 'remote' after it stands in for a paid remote API (a scripted
    OpenAI-compatible server on loopback, the only model double these tests use)."""
    from tests.routing.fault_server import FaultServer

    remote = FaultServer()
    try:
        ModelTier.objects.exclude(name="small").update(enabled=False)
        ModelTier.objects.create(
            name="remote",
            base_url=remote.base_url,
            model="ok:Standard delivery takes 3 to 5 working days [2].",
            context_window=4096,
            max_answer_tokens=64,
            threshold=0.0,
            order=90,
            enabled=True,
            price_input_per_mtok="2.5",
            price_output_per_mtok="10",
        )
        page.goto(daphne_server.url + "/")
        expect(page.locator("#status")).to_have_text("online")

        # Threshold 0 on the small tier: its answer is accepted and stays there.
        _ask(page, "How long do I have to return an item?")
        first = page.locator(".msg.assistant").last
        expect(first.locator(".details")).to_be_visible(timeout=120_000)
        expect(first.locator(".escalation")).to_have_count(0)
        first.locator(".details summary").click()
        expect(first.locator(".details dd").first).to_have_text("small")
        assert not remote.requests

        # The admin raises the small tier's threshold out of reach: the next one escalates.
        ModelTier.objects.filter(name="small").update(threshold=1.0)
        _ask(page, "How long does standard delivery take?")
        # Wait for the second answer itself: `.last` would otherwise still match the first.
        expect(page.locator(".msg.assistant")).to_have_count(2)
        second = page.locator(".msg.assistant").nth(1)
        expect(second.locator(".details")).to_be_visible(timeout=120_000)
        expect(second.locator(".escalation")).to_contain_text("small")
        expect(second.locator(".escalation")).to_contain_text("remote")
        expect(second.locator(".body")).to_contain_text("3 to 5 working days")
        second.locator(".details summary").click()
        expect(second.locator(".details")).to_contain_text("small → remote")
        assert remote.requests
        stored = Message.objects.get(id=second.get_attribute("data-message-id"))
        assert stored.tier == "remote"
        assert [a["outcome"] for a in stored.attempts] == ["low_score", "accepted"]
        page.screenshot(path=str(OUTPUT / "chat-escalated.png"), full_page=True)

        # After a reload the stored answer still says it was escalated.
        page.reload()
        expect(page.locator(".msg.assistant").last.locator(".escalation")).to_contain_text("remote")
    finally:
        remote.stop()


GAP_TO_BOTTOM = "() => { const l = document.getElementById('messages'); return l.scrollHeight - l.scrollTop - l.clientHeight; }"


def test_the_view_follows_new_text_unless_the_customer_scrolled_up(
    page: Page, daphne_server, small_tier, help_centre
) -> None:  # noqa: ANN001
    ModelTier.objects.filter(name="small").update(max_answer_tokens=300)
    page.goto(daphne_server.url + "/")
    conversation = Conversation.objects.create(session_key=_session_key(page), title="Long one")
    for n in range(12):
        Message.objects.create(conversation=conversation, role="user", content=f"Question {n}?")
        Message.objects.create(
            conversation=conversation, role="assistant", content=f"Answer {n}. " + "Words. " * 80
        )
    page.goto(f"{daphne_server.url}/?c={conversation.id}")
    expect(page.locator(".msg.assistant")).to_have_count(12)
    # Opened at the newest message.
    page.wait_for_function(f"() => ({GAP_TO_BOTTOM})() < 48")

    _ask(page, "Explain in great detail, step by step, how returns and refunds work.")
    body = page.locator(".msg.assistant").nth(12).locator(".body")
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('.msg.assistant .body'); return b.length > 12 && b[12].textContent.length > 0; }",
        timeout=120_000,
    )
    # The customer scrolls up to reread: new text must not pull the view down.
    page.evaluate("() => { document.getElementById('messages').scrollTop = 0; }")
    page.wait_for_timeout(200)
    length_when_scrolled = len(body.inner_text())
    expect(page.locator(".msg.assistant").nth(12).locator(".details")).to_be_attached(
        timeout=120_000
    )
    assert len(body.inner_text()) > length_when_scrolled, "the answer ended before the scroll"
    assert page.evaluate("() => document.getElementById('messages').scrollTop") < 48

    # Back at the bottom, the view follows the next answer again.
    page.evaluate(
        "() => { const l = document.getElementById('messages'); l.scrollTop = l.scrollHeight; }"
    )
    page.wait_for_timeout(200)
    _ask(page, "How long does standard delivery take?")
    expect(page.locator(".msg.assistant").nth(13).locator(".details")).to_be_attached(
        timeout=120_000
    )
    assert page.evaluate(GAP_TO_BOTTOM) < 48
