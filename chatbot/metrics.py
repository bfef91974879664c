"""Prometheus metrics: what an operator watches, defined in one place and served at /metrics.

Answers, escalations, abstentions, tokens, cost, provider errors and latencies are counted in
the process that answered (the pipeline calls `answer_observe` once the answer is stored);
cache lookups where the pipeline looks up; open sockets in the consumers. Ingestion figures
are read from the database at each scrape, so every process reports the same queue.

Several Daphne processes: scrape each one (its own port), or set PROMETHEUS_MULTIPROC_DIR to
an empty folder shared by the processes of one host (prometheus-client's multiprocess mode,
cleared before they start); any process then reports the sum of all of them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

ANSWERS = Counter(
    "chatbot_answers_total",
    "Stored answers by answering tier and outcome (answered, cached, abstained, budget, error, "
    "interrupted, stopped) and origin (customer, evaluation, demo).",
    ["tier", "outcome", "origin"],
)
ESCALATIONS = Counter(
    "chatbot_escalations_total",
    "Cascade steps from one tier to the next (its answer scored too low, it said it did not "
    "know, or it failed before its first token).",
    ["from_tier", "to_tier"],
)
ABSTENTIONS = Counter(
    "chatbot_abstentions_total", "Answers that declined ('I don't know') by reason.", ["reason"]
)
CACHE_LOOKUPS = Counter("chatbot_cache_lookups_total", "Answer cache lookups (bypasses excluded).")
CACHE_HITS = Counter(
    "chatbot_cache_hits_total", "Answer cache lookups that served a stored answer."
)
TTFT = Histogram(
    "chatbot_answer_ttft_seconds",
    "Time from the question to the first text shown, by answering tier ('cache' for hits).",
    ["tier"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
TOTAL = Histogram(
    "chatbot_answer_seconds",
    "Time from the question to the stored answer, by answering tier ('cache' for hits).",
    ["tier"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
)
TOKENS = Counter(
    "chatbot_tokens_total",
    "Tokens paid for, by tier and direction (in, out); every attempt, check and rewrite.",
    ["tier", "direction"],
)
COST = Counter(
    "chatbot_cost_usd_total",
    "Cost in USD by tier and origin (every call paid for).",
    ["tier", "origin"],
)
PROVIDER_ERRORS = Counter(
    "chatbot_provider_errors_total",
    "Failed model calls by tier and error code (timeout, rate_limited, server, ...).",
    ["tier", "code"],
)
OPEN_SOCKETS = Gauge(
    "chatbot_open_sockets",
    "WebSockets open now, by consumer (chat, widget, inbox).",
    ["consumer"],
    multiprocess_mode="livesum",
)


def _seconds(milliseconds: float | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def answer_outcome(*, status: str, cached: bool, abstained: bool, error_code: str) -> str:
    """The outcome label of a stored answer."""
    if status != "complete":
        return status
    if cached:
        return "cached"
    if error_code == "budget":
        return "budget"
    return "abstained" if abstained else "answered"


def answer_observe(*, message: Any, result: Any, rewrite: Any = None) -> None:
    """Count one stored answer (a chatbot Message, its routing CascadeResult, the follow-up
    Rewrite). Never raises: a metric must not cost an answer."""
    try:
        _answer_observe(message, result, rewrite)
    except Exception:
        logger.exception("metrics: answer %s not counted", getattr(message, "id", None))


def _answer_observe(message: Any, result: Any, rewrite: Any) -> None:
    origin = message.origin
    outcome = answer_outcome(
        status=message.status,
        cached=message.cached,
        abstained=message.abstained,
        error_code=message.error_code,
    )
    ANSWERS.labels(message.tier or "none", outcome, origin).inc()
    if message.abstained and outcome == "abstained":
        ABSTENTIONS.labels(result.abstain_reason or "unknown").inc()
    latency_tier = "cache" if message.cached else (message.tier or "none")
    ttft = _seconds(message.ttft_ms)
    if ttft is not None:
        TTFT.labels(latency_tier).observe(ttft)
    if message.status == "complete" and message.total_ms is not None:
        TOTAL.labels(latency_tier).observe(message.total_ms / 1000)
    ran = [a for a in result.attempts if not a.outcome.startswith("skipped")]
    for before, after in zip(ran, ran[1:], strict=False):
        ESCALATIONS.labels(before.tier, after.tier).inc()
    for attempt in result.attempts:
        _paid(attempt.tier, attempt.tokens_in, attempt.tokens_out, attempt.call_cost, origin)
        if attempt.error:
            PROVIDER_ERRORS.labels(attempt.tier, attempt.error).inc()
        check = attempt.check
        if check:
            _paid(
                check.get("tier") or attempt.tier,
                check.get("tokens_in") or 0,
                check.get("tokens_out") or 0,
                Decimal(str(check.get("cost") or 0)),
                origin,
            )
            if check.get("error"):
                PROVIDER_ERRORS.labels(check.get("tier") or attempt.tier, check["error"]).inc()
    if rewrite is not None and rewrite.tier:
        _paid(rewrite.tier, rewrite.tokens_in, rewrite.tokens_out, rewrite.cost, origin)


def _paid(tier: str, tokens_in: int, tokens_out: int, cost: Decimal, origin: str) -> None:
    TOKENS.labels(tier, "in").inc(tokens_in)
    TOKENS.labels(tier, "out").inc(tokens_out)
    COST.labels(tier, origin).inc(float(cost))


def cache_lookup_observe(*, hit: bool, bypassed: bool) -> None:
    """Count one answer-cache lookup (a bypassed one is not a lookup)."""
    if bypassed:
        return
    CACHE_LOOKUPS.inc()
    if hit:
        CACHE_HITS.inc()


def socket_opened(consumer: Any) -> None:
    """A consumer accepted its socket: count it open until `socket_closed`."""
    kind = type(consumer).__name__.removesuffix("Consumer").lower() or "socket"
    consumer.metrics_socket = kind
    OPEN_SOCKETS.labels(kind).inc()


def socket_closed(consumer: Any) -> None:
    """A consumer's socket closed; counts only a socket `socket_opened` counted, and only once."""
    kind = getattr(consumer, "metrics_socket", None)
    if kind:
        consumer.metrics_socket = None
        OPEN_SOCKETS.labels(kind).dec()


class IngestionCollector(Collector):
    """Ingestion as the database holds it, read at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Queue depth (ingestion tasks waiting for a worker) and documents per state."""
        from django.db.models import Count
        from django_tasks_db.models import DBTaskResult

        from retrieval.models import KnowledgeDocument
        from retrieval.tasks import document_ingest_task

        depth = (
            DBTaskResult.objects.ready().filter(task_path=document_ingest_task.module_path).count()
        )
        yield GaugeMetricFamily(
            "chatbot_ingestion_queue_depth",
            "Ingestion tasks waiting for a worker.",
            value=depth,
        )
        documents = GaugeMetricFamily(
            "chatbot_ingestion_documents",
            "Knowledge documents by ingestion state (failed: ingestion failures to look at).",
            labels=["status"],
        )
        counts = dict(
            KnowledgeDocument.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        for status in KnowledgeDocument._meta.get_field("status").choices or []:
            documents.add_metric([status[0]], counts.get(status[0], 0))
        yield documents


def address_allowed(address: str) -> bool:
    """Whether a client address may read /metrics (METRICS_ALLOWED_ADDRESSES: addresses or
    networks, e.g. 127.0.0.1,::1,10.0.0.0/8)."""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    for allowed in settings.METRICS_ALLOWED_ADDRESSES:
        try:
            if client in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            logger.warning("METRICS_ALLOWED_ADDRESSES: %r is not an address or network", allowed)
    return False


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format and its content type."""
    ingestion = CollectorRegistry(auto_describe=False)
    ingestion.register(IngestionCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    return counted + generate_latest(ingestion), CONTENT_TYPE_LATEST
