"""`run_stack` with real processes: a killed child is restarted while the others serve, nothing
acknowledged is lost, SIGTERM stops everything within 10 s, a taken port is named; answers left
`streaming` by a dead process are swept to interrupted."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from websockets.sync.client import connect

from routing.servers import port_in_use, process_alive, wait_until_healthy
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
# run_stack's children, by the names its log gives them.
CHILDREN = ("serve_models", "db_worker", "web_worker", "daphne")

pytestmark = [pytest.mark.django_db(transaction=True)]


def _test_database_url() -> str:
    from tests.e2e.conftest import _test_database_url as url

    return url()


class Stack:
    """`manage.py run_stack` on free ports against the test database, its log in test-output/."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        OUTPUT.mkdir(exist_ok=True)
        self.log_path = OUTPUT / f"run-stack-{self.port}.log"
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "CHAT_DEFAULT_TIER": "small",
            "CASCADE_START_TIER": "small",
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_stack", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in the run_stack log:\n{self.log()[-3000:]}")

    def pids(self, name: str) -> list[int]:
        """Every pid the named child had, oldest first."""
        return [int(p) for p in re.findall(rf"{name} started \(pid (\d+)\)", self.log())]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 180) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.healthy():
                return time.monotonic() - started
            assert self.process.poll() is None, self.log()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"not healthy after {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for name in CHILDREN:
            for pid in self.pids(name):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def stack_tier(db):  # noqa: ANN001, ANN201
    """Only the small bundled model, served by run_stack's own serve_models on a free port."""
    from routing.models import ModelTier

    ModelTier.objects.all().delete()
    return ModelTier.objects.create(
        name="small",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="smollm2-135m",
        local_model="smollm2-135m",
        context_window=2048,
        max_answer_tokens=32,
        timeout_seconds=60,
        threshold=0.0,
        order=10,
        enabled=True,
    )


@pytest.fixture
def stack(stack_tier):  # noqa: ANN001, ANN201
    running = Stack()
    try:
        running.wait_for(r"Chat: http://")
        running.wait_healthy()
        yield running
    finally:
        running.kill()


def _ask(stack: Stack, text: str) -> dict:
    """Load the page (a session cookie, as a browser gets), open the socket, ask; the ack."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{stack.url}/", timeout=10).read()
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    url = stack.url.replace("http://", "ws://") + "/ws/chat/"
    with connect(
        url, origin=stack.url, additional_headers={"Cookie": cookie}, open_timeout=10
    ) as ws:
        ws.send(json.dumps({"type": "ask", "text": text, "client_id": f"c-{time.time_ns()}"}))
        while True:
            frame = json.loads(ws.recv(timeout=30))
            if frame["type"] == "ask.ack":
                return frame
            assert frame["type"] != "error", frame


def _server_post(tier, path: str, body: dict) -> dict:  # noqa: ANN001
    root = tier.base_url.removesuffix("/").removesuffix("/v1")
    request = urllib.request.Request(
        f"{root}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _first_prompt_reuses_the_shared_start(tier) -> None:  # noqa: ANN001
    """A question's prompt, straight to the model server: the instructions are already read."""
    from chatbot.prompts import build_messages, instructions
    from retrieval.search import Passage

    passage = Passage(
        chunk_id=1,
        document_id=1,
        document_version=1,
        title=f"Refunds {time.time_ns()}",
        heading="",
        text="Refunds reach your card within five working days.",
        similarity=0.7,
    )
    messages = build_messages(passages=[passage], history=[], question="When is my refund paid?")
    timings = _server_post(
        tier, "/v1/chat/completions", {"messages": messages, "max_tokens": 1, "temperature": 0}
    )["timings"]
    shared = len(_server_post(tier, "/tokenize", {"content": instructions()})["tokens"])
    assert timings["cache_n"] >= shared, timings


@pytest.mark.slow
def test_killed_children_are_restarted_and_acknowledged_questions_kept(
    stack: Stack, stack_tier
) -> None:  # noqa: ANN001
    from chatbot.models import Message

    # The model server read the prompts' shared start when it came up.
    stack.wait_for(r"model servers warmed")
    _first_prompt_reuses_the_shared_start(stack_tier)
    asked = "How long do refunds take after a return?"
    _ask(stack, asked)
    assert Message.objects.filter(role="user", content=asked).exists()

    for name in ("daphne", "db_worker", "web_worker", "serve_models"):
        before = stack.pids(name)
        others = {n: stack.pids(n)[-1] for n in CHILDREN}
        os.kill(before[-1], signal.SIGKILL)
        stack.wait_for(rf"{name} died \(signal 9\); restarting in \d+ s")
        stack.wait_for(rf"{name}: restart \d+")
        deadline = time.monotonic() + 30
        while len(stack.pids(name)) == len(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(stack.pids(name)) == len(before) + 1, stack.log()[-3000:]
        # The others were left running throughout.
        for other, pid in others.items():
            if other != name:
                assert process_alive(pid), f"{other} stopped when {name} was killed"
        assert stack.process.poll() is None
    stack.wait_healthy(timeout=120)
    wait_until_healthy(stack_tier.base_url, timeout=120)
    # The restarted model server (an empty prompt cache) read it again.
    deadline = time.monotonic() + 120
    while stack.log().count("model servers warmed") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    _first_prompt_reuses_the_shared_start(stack_tier)
    # Every acknowledged question is still stored, and the restarted stack takes new ones.
    assert Message.objects.filter(role="user", content=asked).exists()
    _ask(stack, "Do you ship abroad?")
    assert Message.objects.filter(role="user", content="Do you ship abroad?").exists()


@pytest.mark.slow
def test_sigterm_stops_every_child_within_ten_seconds(stack: Stack, stack_tier) -> None:  # noqa: ANN001
    children = [stack.pids(n)[-1] for n in CHILDREN]
    started = time.monotonic()
    os.kill(stack.process.pid, signal.SIGTERM)
    stack.process.wait(timeout=15)
    took = time.monotonic() - started
    assert took < 10, f"run_stack took {took:.1f} s to stop"
    assert not [pid for pid in children if process_alive(pid)]
    model_port = int(stack_tier.base_url.rsplit(":", 1)[1].split("/")[0])
    assert port_in_use("127.0.0.1", stack.port) is None
    assert port_in_use("127.0.0.1", model_port) is None


@pytest.mark.slow
def test_sigterm_while_the_models_load_stops_within_ten_seconds(stack_tier) -> None:  # noqa: ANN001
    stack = Stack()
    try:
        stack.wait_for(r"serving small on")
        [models] = stack.pids("serve_models")
        started = time.monotonic()
        os.kill(stack.process.pid, signal.SIGTERM)
        stack.process.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        stack.kill()
    assert took < 10, f"run_stack took {took:.1f} s to stop"
    assert not process_alive(models)
    # Daphne and the worker were never started: the stop came first.
    assert not stack.pids("daphne") and not stack.pids("db_worker")
    assert not stack.pids("web_worker")


@pytest.mark.slow
def test_a_supervisor_killed_outright_takes_its_children_with_it(stack: Stack, stack_tier) -> None:  # noqa: ANN001
    children = [stack.pids(n)[-1] for n in CHILDREN]
    os.kill(stack.process.pid, signal.SIGKILL)
    stack.process.wait()
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if process_alive(pid)], "children outlived their supervisor"
    model_port = int(stack_tier.base_url.rsplit(":", 1)[1].split("/")[0])
    # Nothing holds the ports: the next `make run` starts.
    assert port_in_use("127.0.0.1", stack.port) is None
    assert port_in_use("127.0.0.1", model_port) is None


def test_a_taken_port_is_named_with_what_to_do(stack_tier) -> None:  # noqa: ANN001
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = Stack(port=port)
        try:
            taken.process.wait(timeout=120)
        finally:
            taken.kill()
    log = taken.log()
    assert taken.process.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}" in log
    assert "choose another port (--port)" in log


def test_answers_left_streaming_by_a_dead_process_are_swept(settings) -> None:  # noqa: ANN001
    from chatbot.models import Conversation, Message
    from chatbot.sweep import messages_sweep_streaming, streaming_grace_seconds

    conversation = Conversation.objects.create(session_key="s-sweep")
    old, fresh, done = (
        Message.objects.create(
            conversation=conversation, role="assistant", content=text, status=status
        )
        for text, status in (("half an ans", "streaming"), ("", "streaming"), ("ok", "complete"))
    )
    grace = streaming_grace_seconds()
    assert grace >= settings.CASCADE_DEADLINE_SECONDS
    Message.objects.filter(id__in=[old.id, done.id]).update(
        created_at=timezone.now() - timedelta(seconds=grace + 5)
    )
    assert messages_sweep_streaming() == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    done.refresh_from_db()
    assert (old.status, old.error_code, old.content) == (
        "interrupted",
        "server_stopped",
        "half an ans",
    )
    # Younger than any answer may run: possibly still being written by a live process.
    assert fresh.status == "streaming"
    assert done.status == "complete"
    # Nothing is left to sweep: running it again (another process, the next period) is harmless.
    assert messages_sweep_streaming() == 0


def test_the_grace_never_undercuts_the_longest_answer(settings) -> None:  # noqa: ANN001
    from chatbot.sweep import streaming_grace_seconds

    settings.CHAT_STREAMING_GRACE_SECONDS = 5
    settings.CASCADE_DEADLINE_SECONDS = 120
    settings.CHAT_REWRITE_TIMEOUT_SECONDS = 15
    assert streaming_grace_seconds() > 135
