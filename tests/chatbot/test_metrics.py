"""/metrics as Prometheus reads it: what answers over real sockets, the cache, a failing tier and
queued ingestion add, and who may read it."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from retrieval.services import document_upload
from routing.models import ModelTier
from tests.chatbot.conftest import chat_socket, frames_until, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = "How many days do I have to return an item?"


async def scrape() -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics (as the loopback scraper sees it), by name and labels."""
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def failing_then_good(fault_server, settings, django_db_blocker):  # noqa: ANN001, ANN201
    """'flaky' (HTTP 500) first, then 'good' (a scripted grounded answer), both on the fault
    server standing in for paid APIs."""
    settings.CASCADE_START_TIER = "flaky"
    settings.CASCADE_SUPPORT_CHECK = "off"
    settings.CHAT_REWRITE_TIER = ""
    with django_db_blocker.unblock():
        ModelTier.objects.all().delete()
        for order, (name, model) in enumerate(
            [("flaky", "http500"), ("good", "ok:You have 30 days to return an item [1]")]
        ):
            ModelTier.objects.create(
                name=name,
                base_url=fault_server.base_url,
                model=model,
                order=order,
                enabled=True,
                threshold=0.0,
                max_answer_tokens=32,
                timeout_seconds=5,
                price_input_per_mtok="1",
                price_output_per_mtok="2",
            )


async def ask(socket, text: str, client_id: str) -> dict:  # noqa: ANN001
    await socket.send_json_to({"type": "ask", "text": text, "client_id": client_id})
    frames = await frames_until(socket, ("answer.end",))
    return frames[-1]


async def test_answers_escalations_errors_cache_and_sockets_are_counted(
    help_centre,  # noqa: ANN001
    failing_then_good,  # noqa: ANN001
) -> None:
    before = await scrape()
    socket = await chat_socket(await new_session())
    opened = await scrape()
    assert value(opened, "chatbot_open_sockets", consumer="chat") == (
        value(before, "chatbot_open_sockets", consumer="chat") + 1
    )

    first = await ask(socket, QUESTION, "q1")
    assert first["status"] == "complete" and first["tier"] == "good" and not first["cached"]
    second = await ask(socket, QUESTION, "q2")
    assert second["cached"], "the same question again is served from the cache"
    off_topic = await ask(socket, "What is the airspeed velocity of an unladen swallow?", "q3")
    assert off_topic["abstained"]
    await socket.disconnect()
    after = await scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    origin = "customer"
    assert delta("chatbot_answers_total", tier="good", outcome="answered", origin=origin) == 1
    assert delta("chatbot_answers_total", tier="good", outcome="cached", origin=origin) == 1
    assert delta("chatbot_answers_total", tier="none", outcome="abstained", origin=origin) == 1
    assert delta("chatbot_abstentions_total", reason="no_passages") == 1
    assert delta("chatbot_escalations_total", from_tier="flaky", to_tier="good") == 1
    code = first["attempts"][0]["error"]
    assert code, "the HTTP 500 is recorded on the stored attempt"
    assert delta("chatbot_provider_errors_total", tier="flaky", code=code) == 1
    assert delta("chatbot_cache_lookups_total") == 3
    assert delta("chatbot_cache_hits_total") == 1
    # Tokens and cost as the stored answer has them (the fault server reports its usage).
    assert (
        delta("chatbot_tokens_total", tier="good", direction="out") == first["usage"]["tokens_out"]
    )
    assert delta("chatbot_tokens_total", tier="good", direction="in") > 0
    assert delta("chatbot_cost_usd_total", tier="good", origin=origin) == pytest.approx(
        first["cost"]
    )
    assert delta("chatbot_answer_ttft_seconds_count", tier="good") == 1
    assert delta("chatbot_answer_seconds_count", tier="good") == 1
    assert delta("chatbot_answer_seconds_count", tier="cache") == 1
    assert delta("chatbot_answer_seconds_sum", tier="good") == pytest.approx(
        first["latency_ms"]["total"] / 1000, rel=0.01
    )
    assert delta("chatbot_open_sockets", consumer="chat") == 0


async def test_queued_ingestion_shows_as_queue_depth(settings) -> None:  # noqa: ANN001
    from asgiref.sync import sync_to_async

    before = await scrape()
    await sync_to_async(document_upload)(
        source_name="metrics-test.md", data=b"# Hours\n\nWe open at nine.\n"
    )
    after = await scrape()
    # No worker runs in this test: the task waits in the queue.
    assert value(after, "chatbot_ingestion_queue_depth") == (
        value(before, "chatbot_ingestion_queue_depth") + 1
    )
    assert value(after, "chatbot_ingestion_documents", status="queued") == (
        value(before, "chatbot_ingestion_documents", status="queued") + 1
    )
    assert ("chatbot_ingestion_documents", frozenset({("status", "failed")})) in after


def test_metrics_refused_outside_the_allowed_addresses(settings) -> None:  # noqa: ANN001
    response = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")
    assert response.status_code == 403
    assert b"chatbot_" not in response.content
    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "203.0.113.0/24"]
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="198.51.100.1").get("/metrics").status_code == 403
    settings.METRICS_ALLOWED_ADDRESSES = ["not-an-address"]
    assert Client().get("/metrics").status_code == 403


def test_several_processes_sum_in_multiprocess_mode(tmp_path) -> None:  # noqa: ANN001
    """PROMETHEUS_MULTIPROC_DIR shared by several processes: any of them reports the sum."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.retrieval.test_worker import worker_database_url

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DATABASE_URL": worker_database_url(),
        "DJANGO_SETTINGS_MODULE": "chatbot.settings",
    }
    count = (
        "import django; django.setup(); from chatbot import metrics; "
        "metrics.cache_lookup_observe(hit=True, bypassed=False)"
    )
    show = (
        "import django; django.setup(); from chatbot import metrics; "
        "print(metrics.exposition()[0].decode())"
    )
    for code in (count, count):
        subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True, timeout=120)
    shown = subprocess.run(
        [sys.executable, "-c", show],
        cwd=root,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    ).stdout.decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(shown)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["chatbot_cache_lookups_total"] == 2
    assert samples["chatbot_cache_hits_total"] == 2
    assert "chatbot_ingestion_queue_depth" in samples
