"""SIGKILL mid-answer against a real `manage.py run_stack` (real Daphne, worker and model
server, the small bundled model, the test database):

- the model server killed while it streams an answer: the customer gets an error frame and the
  end frame (status interrupted, what was said kept), run_stack restarts the model server, and
  the next question is answered;
- Daphne killed while it streams an answer: the acknowledged question is stored, the answer
  the dead process left `streaming` is swept to interrupted by run_stack, and the restarted
  Daphne takes new questions.

test_run_stack.py covers each child killed while idle (restart, the others keep serving,
acknowledged questions kept), SIGTERM within 10 s, and a taken port named with what to do.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import time
import urllib.request

import pytest
from websockets.sync.client import ClientConnection, connect

from routing.servers import wait_until_healthy
from tests.chatbot.test_run_stack import Stack, stack_tier  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(1500)]

QUESTIONS = [
    "How long do refunds take after a return?",
    "What are the delivery options and how long does each take?",
    "How do I return an item that I bought online?",
]


@pytest.fixture
def long_stack(stack_tier, demo_knowledge, monkeypatch):  # noqa: ANN001, ANN201, F811
    """run_stack over the demo help centre, answers long enough to be killed in mid-stream,
    and a sweep that runs every 2 s with the shortest grace the settings allow."""
    stack_tier.max_answer_tokens = 400
    stack_tier.save()
    # Long enough for a first answer from a freshly restarted model on a busy machine.
    monkeypatch.setenv("CASCADE_DEADLINE_SECONDS", "150")
    monkeypatch.setenv("CHAT_REWRITE_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("CHAT_STREAMING_GRACE_SECONDS", "1")
    monkeypatch.setenv("CHAT_SWEEP_INTERVAL_SECONDS", "2")
    monkeypatch.setenv("CASCADE_SUPPORT_CHECK", "off")
    running = Stack()
    try:
        running.wait_for(r"Chat: http://")
        running.wait_healthy()
        yield running
    finally:
        running.kill()


def _socket(stack: Stack) -> ClientConnection:
    """A page's socket: the page loaded first (its session cookie)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{stack.url}/", timeout=30).read()
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    url = stack.url.replace("http://", "ws://") + "/ws/chat/"
    return connect(url, origin=stack.url, additional_headers={"Cookie": cookie}, open_timeout=30)


def _ask_and_kill(stack: Stack, victim: str) -> tuple[dict, list[dict], ClientConnection]:
    """Ask until an answer is streaming, then SIGKILL the victim's newest process; the ack,
    the frames after the kill (until the socket's end or answer.end) and the socket."""
    for attempt, question in enumerate(QUESTIONS):
        ws = _socket(stack)
        ws.send(json.dumps({"type": "ask", "text": question, "client_id": f"k-{attempt}"}))
        ack: dict = {}
        while True:
            frame = json.loads(ws.recv(timeout=300))
            if frame["type"] == "ask.ack":
                ack = frame
            elif frame["type"] == "answer.delta":
                break
            elif frame["type"] == "answer.end":
                frame = {}
                break
        if not frame:
            ws.close()
            continue  # answered without a model (declined): try a question it answers
        os.kill(stack.pids(victim)[-1], signal.SIGKILL)
        after: list[dict] = []
        try:
            while True:
                frame = json.loads(ws.recv(timeout=120))
                after.append(frame)
                if frame["type"] == "answer.end":
                    break
        except Exception:  # noqa: BLE001 - the socket dies with Daphne
            pass
        if after and after[-1].get("status") == "complete" and victim == "serve_models":
            ws.close()  # the answer ended before the kill reached it: try again
            stack.wait_for(rf"{victim}: restart \d+")
            wait_until_healthy(_tier_url(), timeout=300)
            continue
        return ack, after, ws
    raise AssertionError("no answer was still streaming when its process was killed")


def _short_answers() -> None:
    """Back to short answers: the next question must finish within the deadline on a busy
    machine (the long ones were only there to be killed mid-stream)."""
    from routing.models import ModelTier

    ModelTier.objects.filter(name="small").update(max_answer_tokens=32)


def _tier_url() -> str:
    from routing.models import ModelTier

    return ModelTier.objects.get(name="small").base_url


def test_a_model_server_killed_mid_answer_ends_it_interrupted_and_comes_back(long_stack) -> None:  # noqa: ANN001
    from chatbot.models import Message

    stack = long_stack
    ack, after, ws = _ask_and_kill(stack, "serve_models")
    kinds = [f["type"] for f in after]
    assert kinds[-2:] == ["error", "answer.end"], after
    end = after[-1]
    assert end["status"] == "interrupted", end
    stored = Message.objects.get(id=end["message_id"])
    assert stored.status == Message.Status.INTERRUPTED and stored.content, "what was said is kept"
    assert Message.objects.filter(id=ack["message_id"], role="user").exists()

    stack.wait_for(r"serve_models died \(signal 9\); restarting in \d+ s")
    stack.wait_for(r"serve_models: restart \d+")
    wait_until_healthy(_tier_url(), timeout=300)
    _short_answers()
    ws.send(json.dumps({"type": "ask", "text": "Do you ship abroad?", "client_id": "k-next"}))
    while True:
        frame = json.loads(ws.recv(timeout=300))
        if frame["type"] == "answer.end":
            break
    assert frame["status"] == "complete", frame
    ws.close()


def test_daphne_killed_mid_answer_keeps_the_question_and_sweeps_the_answer(long_stack) -> None:  # noqa: ANN001
    from chatbot.models import Message

    stack = long_stack
    ack, _after, ws = _ask_and_kill(stack, "daphne")
    ws.close()
    question = Message.objects.get(id=ack["message_id"])
    assert question.role == "user"
    answer = Message.objects.filter(
        conversation_id=question.conversation_id, role="assistant"
    ).latest("id")
    # The process died before it could write its end: only the sweep ends it. (On a busy
    # machine a cold first answer can outlive the grace and be swept before the kill.)
    assert answer.status in (Message.Status.STREAMING, Message.Status.INTERRUPTED)

    stack.wait_for(r"daphne died \(signal 9\); restarting in \d+ s")
    stack.wait_for(r"daphne: restart \d+")
    stack.wait_healthy(timeout=120)
    deadline = time.monotonic() + 400  # the grace: the deadline, the rewrite timeout and 30 s
    while time.monotonic() < deadline:
        answer.refresh_from_db()
        if answer.status != Message.Status.STREAMING:
            break
        time.sleep(1)
    assert answer.status == Message.Status.INTERRUPTED and answer.error_code == "server_stopped"
    stack.wait_for(r"answer\(s\) left streaming by a stopped process marked interrupted")

    # The restarted Daphne takes new questions.
    _short_answers()
    ws = _socket(stack)
    ws.send(json.dumps({"type": "ask", "text": "Do you ship abroad?", "client_id": "k-after"}))
    while True:
        frame = json.loads(ws.recv(timeout=300))
        if frame["type"] == "answer.end":
            break
    assert frame["status"] == "complete", frame
    ws.close()
