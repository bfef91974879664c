"""Shared fixtures: real PostgreSQL (embedded), real llama.cpp servers started once per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from routing.servers import wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelServer:
    """A `manage.py serve_models` process serving one bundled model on loopback."""

    def __init__(self, model: str, context: int) -> None:
        self.model = model
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = ROOT / "test-output" / f"model-{model}.log"
        self.log.parent.mkdir(exist_ok=True)
        self._handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve_models",
                "--serve",
                f"{model}={self.port}:{context}",
            ],
            cwd=ROOT,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LOCAL_MODEL_PARALLEL": "2"},
        )
        try:
            wait_until_healthy(self.base_url, timeout=180)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._handle.close()


@pytest.fixture(scope="session")
def small_model_server() -> Iterator[ModelServer]:
    """SmolLM2-135M on llama.cpp (context 2048): for tests where answer quality does not matter."""
    server = ModelServer("smollm2-135m", 2048)
    yield server
    server.stop()


@pytest.fixture
def small_tier(small_model_server: ModelServer, settings, django_db_blocker):  # noqa: ANN001, ANN201
    """A ModelTier row for the small test server, made the chat's default tier."""
    from routing.models import ModelTier

    with django_db_blocker.unblock():
        tier, _ = ModelTier.objects.update_or_create(
            name="small",
            defaults=dict(
                base_url=small_model_server.base_url,
                model="smollm2-135m",
                local_model="smollm2-135m",
                context_window=2048,
                max_answer_tokens=48,
                timeout_seconds=60,
                # Alone in the cascade, its answers are kept whatever the scorer says: these
                # tests are about the path, not the 135M model's quality (cascade tests set
                # their own thresholds).
                threshold=0.0,
                order=10,
                enabled=True,
                price_input_per_mtok="0.135",
                price_output_per_mtok="0.54",
            ),
        )
    settings.CHAT_DEFAULT_TIER = "small"
    return tier


@pytest.fixture
def fault_server():  # noqa: ANN201 - tests.routing.fault_server.FaultServer
    """A scripted OpenAI-compatible server on loopback: the stand-in for a paid remote API and
    the fault injector (timeouts, HTTP 500, broken streams)."""
    from tests.routing.fault_server import FaultServer

    server = FaultServer()
    yield server
    server.stop()


@pytest.fixture
def demo_knowledge(django_db_blocker) -> None:  # noqa: ANN001
    """The demo help centre, indexed (embeddings are real MiniLM vectors)."""
    with django_db_blocker.unblock():
        call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))


@pytest.fixture(autouse=True)
async def _close_async_db_connections():  # noqa: ANN202
    """The async ORM's worker thread keeps its own connection: close it so test databases can be dropped."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def _close_search_connections() -> Iterator[None]:
    """Hybrid search's text-half threads keep their own connections between searches: close
    them so test databases can be dropped."""
    yield
    from retrieval.search import text_lane_close

    text_lane_close()


@pytest.fixture(autouse=True)
def _close_lane_connections() -> Iterator[None]:
    """A test can end while an answer still runs on a chat database lane (its event loop is
    closed under it, so the lane's own close never comes): close every lane thread's
    connection, so the pool is not left short and test databases can be dropped."""
    yield
    from django.db import connections

    from chatbot import consumers

    if consumers._lanes is None:
        return
    for executor in consumers._lanes._executors:
        try:
            executor.submit(connections.close_all).result(timeout=30)
        except Exception:  # noqa: BLE001 - a lane a test left blocked keeps its connection
            pass
