"""The cascade against a fault-injecting OpenAI-compatible server: fallback, thresholds, costs."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from routing.cascade import CascadeEvent, CascadeResult, CascadeTier, cascade_run
from routing.providers import ProviderConfig
from routing.tokens import count_tokens
from tests.routing.fault_server import PROMPT_TOKENS, FaultServer

ABSTAIN = "I don't know: ask support."
ANSWER = "Returns are accepted within 30 days [1]"
PASSAGES = ["Returns are accepted within 30 days of delivery."]


def tier(
    server: FaultServer,
    name: str,
    model: str,
    *,
    threshold: float = 0.0,
    key: str | None = "local",
    price_in: str = "1",
    price_out: str = "4",
) -> CascadeTier:
    return CascadeTier(
        name=name,
        config=ProviderConfig(
            name=name,
            base_url=server.base_url,
            model=model,
            api_key=key,
            timeout_seconds=1.0,
            max_retries=0,
        ),
        threshold=threshold,
        price_input_per_mtok=Decimal(price_in),
        price_output_per_mtok=Decimal(price_out),
        max_answer_tokens=32,
        context_window=2048,
        local=False,
        messages=[{"role": "user", "content": "How long for returns?"}],
        passage_texts=PASSAGES,
        passage_similarities=[0.8],
    )


async def run(tiers: list[CascadeTier], **kwargs) -> tuple[list[CascadeEvent], CascadeResult]:  # noqa: ANN003
    events = [
        event
        async for event in cascade_run(
            tiers=tiers,
            question="How long do I have to return an item?",
            abstain_text=ABSTAIN,
            **kwargs,
        )
    ]
    assert events[-1].kind == "done" and events[-1].result is not None
    return events, events[-1].result


async def test_failures_before_the_first_token_fall_through_in_order(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "http500"),
        tier(fault_server, "b", "timeout"),
        tier(fault_server, "c", f"ok:{ANSWER}"),
    ]
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == ["error:http", "error:timeout", "accepted"]
    assert result.tier == "c"
    assert result.text.strip() == ANSWER
    assert not result.abstained and not result.error_code


async def test_a_stream_broken_mid_answer_is_interrupted_not_replaced(fault_server) -> None:  # noqa: ANN001
    tiers = [tier(fault_server, "a", f"broken:{ANSWER}"), tier(fault_server, "b", f"ok:{ANSWER}")]
    _, result = await run(tiers)
    assert result.interrupted and result.error_code == "broken_stream"
    assert [a.tier for a in result.attempts] == ["a"], "no silent fallback after the first token"
    assert result.text and result.text.strip() != ANSWER


async def test_thresholds_decide_acceptance_and_the_last_tier_abstains(fault_server) -> None:  # noqa: ANN001
    ok = f"ok:{ANSWER}"
    _, low = await run([tier(fault_server, "a", ok, threshold=0.0), tier(fault_server, "b", ok)])
    assert low.tier == "a" and len(low.attempts) == 1
    score = low.attempts[0].score
    assert score is not None and 0.0 < score < 1.0

    _, high = await run(
        [tier(fault_server, "a", ok, threshold=score + 1e-6), tier(fault_server, "b", ok)]
    )
    assert [a.outcome for a in high.attempts] == ["low_score", "accepted"]
    assert high.tier == "b"

    _, last = await run([tier(fault_server, "a", ok, threshold=score + 1e-6)])
    assert last.abstained and last.text == ABSTAIN
    assert last.abstain_reason == "low_score"
    assert last.attempts[0].outcome == "abstained"

    _, kept = await run([tier(fault_server, "a", ok, threshold=score + 1e-6)], accept_last=True)
    assert kept.tier == "a" and not kept.abstained


async def test_dont_know_escalates_whatever_the_threshold(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "ok:I don't know.", threshold=0.0),
        tier(fault_server, "b", f"ok:{ANSWER}"),
    ]
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == ["dont_know", "accepted"]


async def test_streamed_drafts_are_replaced_on_escalation(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "ok:Maybe ten days", threshold=1.0),
        tier(fault_server, "b", f"ok:{ANSWER}"),
    ]
    events, result = await run(tiers, stream_mode="stream")
    kinds = [e.kind for e in events]
    escalate = kinds.index("escalate")
    assert "delta" in kinds[:escalate], "the lower tier's draft streamed first"
    assert events[escalate].from_tier == "a" and events[escalate].to_tier == "b"
    after = "".join(e.text for e in events[escalate:] if e.kind == "delta")
    assert after.strip() == ANSWER == result.text.strip()

    events, _ = await run(tiers, stream_mode="buffer")
    first_delta = next(i for i, e in enumerate(events) if e.kind == "delta")
    assert first_delta > [e.kind for e in events].index("escalate"), "buffered drafts stay hidden"


async def test_missing_key_skips_the_tier(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "remote", f"ok:{ANSWER}", key=None),
        tier(fault_server, "local", f"ok:{ANSWER}"),
    ]
    _, result = await run(tiers)
    assert [a.outcome for a in result.attempts] == ["skipped:missing_key", "accepted"]
    assert result.tier == "local"


async def test_every_attempt_is_paid_from_reported_usage(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "ok:Maybe ten days", threshold=1.0, price_in="2", price_out="8"),
        tier(fault_server, "b", f"ok:{ANSWER}", price_in="10", price_out="40"),
    ]
    _, result = await run(tiers)
    a, b = result.attempts
    assert (a.tokens_in, a.tokens_out) == (PROMPT_TOKENS, 3)
    assert (b.tokens_in, b.tokens_out) == (PROMPT_TOKENS, len(ANSWER.split()))
    assert a.cost == (Decimal(2) * PROMPT_TOKENS + Decimal(8) * 3) / Decimal(1_000_000)
    assert b.cost == (Decimal(10) * PROMPT_TOKENS + Decimal(40) * len(ANSWER.split())) / Decimal(
        1_000_000
    )
    assert result.cost == a.cost + b.cost
    assert result.tokens_in == 2 * PROMPT_TOKENS


async def test_a_call_the_server_never_answered_costs_nothing(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "http500"),
        tier(fault_server, "b", "timeout"),
        tier(fault_server, "c", f"ok:{ANSWER}"),
    ]
    _, result = await run(tiers)
    failed = result.attempts[:2]
    assert [(a.tokens_in, a.tokens_out, a.cost) for a in failed] == [(0, 0, Decimal(0))] * 2
    assert not any(a.estimated for a in failed)
    assert result.cost == result.attempts[2].cost > 0


async def test_a_stream_broken_mid_answer_is_paid_as_counted_and_marked_estimated(
    fault_server,  # noqa: ANN001
) -> None:
    _, result = await run([tier(fault_server, "a", f"broken:{ANSWER}")])
    (attempt,) = result.attempts
    prompt = count_tokens("How long for returns?")
    assert attempt.estimated and result.estimated
    # The prompt counted by the tier's counter; the output is the tokens the server streamed
    # (one log-probability each), here one per word.
    assert attempt.tokens_in == prompt and attempt.tokens_out == len(attempt.text.split()) > 0
    assert attempt.cost == (Decimal(1) * prompt + Decimal(4) * attempt.tokens_out) / Decimal(10**6)


async def test_a_broken_hidden_draft_escalates_instead_of_ending_the_answer(fault_server) -> None:  # noqa: ANN001
    tiers = [tier(fault_server, "a", f"broken:{ANSWER}"), tier(fault_server, "b", f"ok:{ANSWER}")]
    events, result = await run(tiers, stream_mode="buffer")
    assert [a.outcome for a in result.attempts] == ["error:broken_stream", "accepted"]
    assert result.tier == "b" and not result.interrupted and not result.error_code
    shown = "".join(e.text for e in events if e.kind == "delta")
    assert shown.strip() == ANSWER, "the broken draft was never shown"
    assert result.attempts[0].cost > 0, "the broken draft is paid all the same"


async def test_a_stopped_answer_keeps_every_attempt_and_what_it_paid(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", "ok:Maybe ten days", threshold=1.0),
        tier(fault_server, "b", f"slow:{ANSWER}"),
    ]
    result = CascadeResult()
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for event in cascade_run(
            tiers=tiers, question="How long?", abstain_text=ABSTAIN, result=result
        ):
            if event.kind == "delta" and event.tier == "b":
                first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    a, b = result.attempts
    assert a.outcome == "low_score" and a.cost > 0 and not a.estimated
    assert b.outcome == "cancelled" and b.estimated
    assert b.tokens_in > 0 and b.tokens_out >= 1 and b.cost > 0
    assert result.cost == a.cost + b.cost


async def test_the_answer_deadline_fails_a_slow_tier_and_falls_through(fault_server) -> None:  # noqa: ANN001
    tiers = [
        tier(fault_server, "a", f"slow:{ANSWER}"),
        tier(fault_server, "b", f"ok:{ANSWER}"),
    ]
    loop = asyncio.get_running_loop()
    events, result = await run(tiers, stream_mode="buffer", deadline=loop.time() + 0.5)
    # The slow tier was cut at the deadline; nothing is left for the next tier either.
    assert result.attempts[0].outcome == "error:deadline"
    assert result.error_code == "deadline" and result.tier is None


async def test_model_calls_share_one_tls_context(fault_server, monkeypatch) -> None:  # noqa: ANN001
    """A client building its own TLS context reads the CA bundle (about 40 ms of CPU on the
    event loop); the process reads it once, however many calls its answers make."""
    import ssl

    from routing import providers

    reads = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads.append(args)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    # Start from a process that has not read it yet.
    providers._tls_context.cache_clear()
    tiers = [
        tier(fault_server, "a", "ok:Maybe ten days", threshold=1.0),
        tier(fault_server, "b", f"ok:{ANSWER}"),
    ]
    for _ in range(2):
        _, result = await run(tiers)
        assert result.tier == "b" and result.text.strip() == ANSWER
    assert len(reads) == 1
