"""Upstream faults the cascade meets in production, injected by the loopback fault server:
rate limits (429 with and without Retry-After), a chunked stream cut between chunks, a stall
after the first token, and every tier down."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from routing.providers import retry_after_seconds
from tests.routing.test_cascade import ANSWER, run, tier


@pytest.fixture(autouse=True)
def _retry_after_cap(settings) -> None:  # noqa: ANN001
    settings.TIER_RETRY_AFTER_MAX_SECONDS = 2.0


async def test_a_429_without_retry_after_goes_to_the_next_tier_at_once(fault_server) -> None:  # noqa: ANN001
    tiers = [tier(fault_server, "a", "busy"), tier(fault_server, "b", f"ok:{ANSWER}")]
    started = time.monotonic()
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == ["error:rate_limited", "accepted"]
    assert result.tier == "b" and result.text.strip() == ANSWER
    assert time.monotonic() - started < 1.0, "no waiting when the server names no time"
    assert [r["model"] for r in fault_server.requests] == ["busy", f"ok:{ANSWER}"]


async def test_a_429_with_a_short_retry_after_is_waited_out_on_the_same_tier(fault_server) -> None:  # noqa: ANN001
    model = f"busy1:{ANSWER}"
    tiers = [tier(fault_server, "a", model), tier(fault_server, "b", "http500")]
    started = time.monotonic()
    _, result = await run(tiers)
    waited = time.monotonic() - started
    assert [a.outcome for a in result.attempts] == ["accepted"]
    assert result.tier == "a" and result.text.strip() == ANSWER
    assert waited >= 1.0, "Retry-After: 1 was honoured"
    assert [r["model"] for r in fault_server.requests] == [model, model]


async def test_a_429_asking_for_longer_than_the_cap_goes_to_the_next_tier(fault_server) -> None:  # noqa: ANN001
    tiers = [tier(fault_server, "a", f"busy30:{ANSWER}"), tier(fault_server, "b", f"ok:{ANSWER}")]
    started = time.monotonic()
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == ["error:rate_limited", "accepted"]
    assert result.tier == "b"
    assert time.monotonic() - started < 1.0


async def test_a_429_on_the_only_tier_is_an_error_not_a_wait(fault_server) -> None:  # noqa: ANN001
    _, result = await run([tier(fault_server, "a", f"busy30:{ANSWER}")])
    assert result.error_code == "rate_limited" and result.tier is None and not result.text


def test_retry_after_is_read_as_seconds_milliseconds_or_a_date() -> None:
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now + 7, tz=UTC), usegmt=True)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(7, abs=1)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds({}) is None


async def test_a_chunked_stream_cut_between_chunks_ends_interrupted_with_what_was_said(
    fault_server,  # noqa: ANN001
) -> None:
    tiers = [tier(fault_server, "a", f"cut:{ANSWER}"), tier(fault_server, "b", f"ok:{ANSWER}")]
    events, result = await run(tiers)
    shown = "".join(e.text for e in events if e.kind == "delta")
    assert result.interrupted and result.error_code == "broken_stream"
    assert result.text == shown and shown and shown.strip() != ANSWER
    assert [a.tier for a in result.attempts] == ["a"], "no silent fallback after the first token"
    assert result.attempts[0].estimated and result.attempts[0].cost > 0


async def test_a_stall_after_the_first_token_is_ended_by_the_idle_timeout(fault_server) -> None:  # noqa: ANN001
    # The tier's timeout bounds every read: a stream that goes quiet ends after it.
    started = time.monotonic()
    events, result = await run([tier(fault_server, "a", f"stall:{ANSWER}")])
    assert time.monotonic() - started < 5
    assert result.interrupted and result.error_code == "timeout"
    assert result.text.strip() == ANSWER.split()[0]


async def test_a_stall_after_the_first_token_is_ended_by_the_answer_deadline(fault_server) -> None:  # noqa: ANN001
    slow = tier(fault_server, "a", f"stall:{ANSWER}")
    patient = replace(slow, config=replace(slow.config, timeout_seconds=60.0))
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    _, result = await run([patient], deadline=loop.time() + 1.5)
    assert time.monotonic() - started < 5
    assert result.interrupted and result.error_code == "deadline"
    assert result.text.strip() == ANSWER.split()[0]


async def test_every_tier_down_is_one_clear_error(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "http500"),
        tier(fault_server, "b", "busy"),
        tier(fault_server, "c", "timeout"),
    ]
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == [
        "error:http",
        "error:rate_limited",
        "error:timeout",
    ]
    assert result.error_code == "timeout" and result.tier is None and not result.text
    assert not result.interrupted and not result.abstained
