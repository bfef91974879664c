"""/healthz and /readyz as a load balancer sees them: the database, each enabled local model
server and a real task worker's heartbeat; 503 with a body naming what failed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from chatbot import health
from chatbot.health import worker_heartbeat_task
from retrieval import language
from retrieval.models import KnowledgeDocument
from routing.models import ModelTier
from tests.conftest import free_port
from tests.retrieval.test_worker import run_worker_batch

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")
    return response.status_code, json.loads(response.content)


def test_ready_once_a_real_worker_has_taken_the_heartbeat_probe(small_tier) -> None:  # noqa: ANN001
    status, body = readyz()
    assert status == 503 and body["failed"] == ["worker"]
    assert body["checks"]["database"]["ok"] and body["checks"]["model:small"]["ok"]
    assert "db_worker" in body["checks"]["worker"]["detail"]
    # The check queued a probe (once, however often it is asked) for a worker to run.
    readyz()
    probes = DBTaskResult.objects.filter(task_path=worker_heartbeat_task.module_path)
    assert probes.filter(status=TaskResultStatus.READY).count() == 1

    run_worker_batch()
    status, body = readyz()
    assert status == 200 and body == {
        "ready": True,
        "failed": [],
        "checks": {
            "database": {"ok": True, "detail": ""},
            "model:small": {"ok": True, "detail": ""},
            "worker": body["checks"]["worker"],
            "warm-up": body["checks"]["warm-up"],
        },
    }
    assert body["checks"]["warm-up"]["ok"]
    assert body["checks"]["worker"]["ok"]
    # Probes do not pile up: the latest heartbeat and the next probe, scheduled ahead.
    readyz()
    run_worker_batch()
    latest = probes.get(status=TaskResultStatus.SUCCESSFUL)
    waiting = probes.get(status=TaskResultStatus.READY)
    # A quarter of READYZ_WORKER_STALE_SECONDS (60) after the latest heartbeat.
    assert 12 <= (waiting.run_after - latest.finished_at).total_seconds() <= 16


def test_a_dead_model_server_and_a_stale_worker_are_named() -> None:
    port = free_port()
    ModelTier.objects.create(
        name="ghost",
        base_url=f"http://127.0.0.1:{port}/v1",
        model="smollm2-135m",
        local_model="smollm2-135m",
        order=1,
        enabled=True,
    )
    # A remote tier is not a local server of ours: not checked.
    ModelTier.objects.create(
        name="remote", base_url="http://127.0.0.1:9/v1", model="x", order=2, enabled=True
    )
    ModelTier.objects.create(
        name="off", base_url="http://127.0.0.1:9/v1", model="x", local_model="x", enabled=False
    )
    worker_heartbeat_task.enqueue()
    probe = DBTaskResult.objects.get(task_path=worker_heartbeat_task.module_path)
    probe.status = TaskResultStatus.SUCCESSFUL
    probe.finished_at = timezone.now() - timedelta(minutes=5)
    probe.save()

    status, body = readyz()
    assert status == 503
    assert body["failed"] == ["model:ghost", "worker"]
    assert f"127.0.0.1:{port}/health" in body["checks"]["model:ghost"]["detail"]
    assert "300 s ago" in body["checks"]["worker"]["detail"]
    assert set(body["checks"]) == {"database", "model:ghost", "worker", "warm-up"}

    # A worker deep in a long ingestion beats the document's heartbeat: alive.
    KnowledgeDocument.objects.create(
        source_name="big.md",
        source_type="md",
        raw=b"# Big\n",
        status=KnowledgeDocument.Status.EMBEDDING,
        heartbeat_at=timezone.now(),
    )
    status, body = readyz()
    assert body["failed"] == ["model:ghost"] and body["checks"]["worker"]["ok"]


def test_probes_are_answered_over_plain_http_when_https_is_enforced(settings) -> None:  # noqa: ANN001
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/readyz").status_code in (200, 503)
    assert Client().get("/metrics").status_code == 200
    assert Client().get("/").status_code == 301


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_process_whose_database_is_gone_is_alive_but_not_ready() -> None:
    from chatbot.management.commands.run_stack import daphne_command

    port = free_port()
    env = {
        **os.environ,
        # Nothing listens there: every connection is refused.
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/chatbot?connect_timeout=3",
        "DATABASE_POOL": "0",
    }
    env.pop("DATABASE_NAME", None)
    log = (ROOT / "test-output" / "health-daphne.log").open("wb")
    process = subprocess.Popen(
        daphne_command(bind="127.0.0.1", port=port), cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        assert (status, body) == (200, {"ok": True})
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and body["failed"] == ["database"] and not body["ready"]
        assert "OperationalError" in body["checks"]["database"]["detail"]
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_not_ready_while_this_process_loads_its_models_or_after_it_failed(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(health, "_warm_up", dict(health._warm_up))
    gate = threading.Event()
    detect = language.detect_language

    def slow_detect(text: str) -> str:
        assert gate.wait(60)
        return detect(text)

    monkeypatch.setattr(language, "detect_language", slow_detect)
    thread = health.warm_up_start()
    status, body = readyz()
    assert status == 503 and "warm-up" in body["failed"]
    assert body["checks"]["warm-up"] == {
        "ok": False,
        "detail": "loading the embedder and language models",
    }
    gate.set()
    thread.join(60)
    body = readyz()[1]
    assert body["checks"]["warm-up"]["ok"] and "warm-up" not in body["failed"]
    assert body["checks"]["warm-up"]["detail"].startswith("models loaded in ")

    def broken(text: str) -> str:
        raise OSError("language models missing")

    monkeypatch.setattr(language, "detect_language", broken)
    health.warm_up_start().join(60)
    status, body = readyz()
    assert status == 503 and "warm-up" in body["failed"]
    assert body["checks"]["warm-up"] == {"ok": False, "detail": "OSError: language models missing"}


def test_a_new_server_process_loads_its_models_before_the_first_question(small_tier) -> None:  # noqa: ANN001
    """Daphne's process loads the embedder and language detector at start: its readiness says
    so without any question asked."""
    from tests.e2e.conftest import LiveServer, _test_database_url

    server = LiveServer(_test_database_url())
    server.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            status, body = _get(f"{server.url}/readyz")
            if body["checks"]["warm-up"]["ok"] or time.monotonic() > deadline:
                break
            assert body["checks"]["warm-up"]["detail"] == "loading the embedder and language models"
            time.sleep(0.3)
        assert body["checks"]["warm-up"]["detail"].startswith("models loaded in ")
    finally:
        server.stop()
        server.log.close()
