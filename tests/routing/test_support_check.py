"""The answerability check: a paid yes/no question about the cited passage, asked of the check's
tier once per passage; failures leave the answer alone."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from chatbot.prompts import SUPPORT_CHECK_SYSTEM, SUPPORT_CHECK_USER
from routing.cascade import CascadeTier, SupportCheck, cascade_run, p_yes_from_top
from routing.providers import ProviderConfig
from routing.scorer import score_signals
from tests.routing.fault_server import PROMPT_TOKENS

ABSTAIN = "I don't know: ask support."
ANSWER = "Returns are accepted within 30 days [2]"
PASSAGES = ["Gift cards never expire.", "Returns are accepted within 30 days of delivery."]
QUESTION = "How long do I have to return an item?"
# A scorer that leans on the check: a missing check must be neutral (its stored mean, 0.6).
WEIGHTS = {"bias": 0.0, "check_yes": 4.0, "check_yes_neutral": 0.6}


def tier(
    base_url: str, model: str, *, threshold: float = 0.5, timeout: float = 1.0, name: str = "t"
) -> CascadeTier:
    return CascadeTier(
        name=name,
        config=ProviderConfig(
            name=name,
            base_url=base_url,
            model=model,
            api_key="local",
            timeout_seconds=timeout,
            max_retries=0,
        ),
        threshold=threshold,
        price_input_per_mtok=Decimal("1"),
        price_output_per_mtok=Decimal("4"),
        max_answer_tokens=32,
        context_window=2048,
    )


async def run(tiers: list[CascadeTier], messages=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
    prompt = messages or [{"role": "user", "content": "How long for returns?"}]
    tiers = [
        dataclasses.replace(
            t, messages=prompt, passage_texts=PASSAGES, passage_similarities=[0.9, 0.8]
        )
        for t in tiers
    ]
    events = [
        event
        async for event in cascade_run(
            tiers=tiers,
            question=QUESTION,
            abstain_text=ABSTAIN,
            weights=WEIGHTS,
            **kwargs,
        )
    ]
    assert events[-1].kind == "done" and events[-1].result is not None
    return events, events[-1].result


def test_p_yes_is_normalised_over_yes_and_no() -> None:
    assert p_yes_from_top({"Yes": -0.1, " no": -0.1, "The": -0.01}) == pytest.approx(0.5)
    assert p_yes_from_top({"yes": -0.2231, "No": -1.6094}) == pytest.approx(0.8, abs=1e-3)
    assert p_yes_from_top({"The": -0.1}) is None


def check_of(t: CascadeTier) -> SupportCheck:
    return SupportCheck(tier=t, system=SUPPORT_CHECK_SYSTEM, user=SUPPORT_CHECK_USER)


async def test_check_reads_p_yes_is_billed_and_asks_about_the_cited_passage(fault_server) -> None:  # noqa: ANN001
    t = tier(fault_server.base_url, f"ok:{ANSWER}|check=ok:yes")
    before = len(fault_server.requests)
    _, result = await run([t], support_check=check_of(t))
    attempt = result.attempts[0]
    assert attempt.outcome == "accepted" and result.text.strip() == ANSWER
    assert attempt.signals["check_yes"] == pytest.approx(1.0)
    assert attempt.check["p_yes"] == pytest.approx(1.0) and attempt.check["error"] == ""
    # Answer and check are both paid; the answer call's own tokens and cost stay apart (what
    # "the largest tier alone", never checked, is priced on).
    answer_out = len(ANSWER.split())
    assert (attempt.tokens_in, attempt.tokens_out) == (PROMPT_TOKENS, answer_out)
    assert (attempt.check["tokens_in"], attempt.check["tokens_out"]) == (PROMPT_TOKENS, 1)
    assert attempt.call_cost == t.cost(PROMPT_TOKENS, answer_out)
    assert attempt.check["cost"] == pytest.approx(float(t.cost(PROMPT_TOKENS, 1)))
    assert attempt.cost == attempt.call_cost + t.cost(PROMPT_TOKENS, 1)
    assert result.tokens_in == 2 * PROMPT_TOKENS and result.tokens_out == answer_out + 1
    _answer_call, check_call = fault_server.requests[before:]
    assert check_call["max_tokens"] == 1 and check_call["logprobs"] is True
    # The cited passage ([2]) and the question, never the answer nor the other passage.
    assert check_call["messages"] == check_of(t).messages(question=QUESTION, passage=PASSAGES[1])
    assert ANSWER not in str(check_call["messages"]) and PASSAGES[0] not in str(check_call)
    assert attempt.as_dict()["check"]["p_yes"] == pytest.approx(1.0)


async def test_check_is_asked_of_its_own_tier_once_per_passage(fault_server) -> None:  # noqa: ANN001
    # The check's tier answers "no": both tiers' answers (citing the same passage) score low.
    low = tier(fault_server.base_url, f"ok:{ANSWER}", name="low", threshold=0.6)
    high = tier(fault_server.base_url, f"ok:{ANSWER}", name="high", threshold=0.6)
    judge = dataclasses.replace(
        tier(fault_server.base_url, "ok:x|check=ok:no", name="judge"),
        price_input_per_mtok=Decimal("10"),
        price_output_per_mtok=Decimal("40"),
    )
    before = len(fault_server.requests)
    _, result = await run([low, high], support_check=check_of(judge))
    first, second = result.attempts
    assert [r["model"] for r in fault_server.requests[before:]] == [
        low.config.model,
        judge.config.model,
        high.config.model,
    ]
    assert first.check["tier"] == "judge" and first.check["p_yes"] == pytest.approx(0.0)
    # Paid at the judge's prices, once: the second attempt reuses the same passage's verdict.
    assert first.check["cost"] == pytest.approx(float(judge.cost(PROMPT_TOKENS, 1)))
    assert second.check["reused"] and second.check["cost"] == 0
    assert second.check["passage"] == first.check["passage"]
    assert second.signals["check_yes"] == pytest.approx(0.0)
    assert result.cost == first.call_cost + second.call_cost + judge.cost(PROMPT_TOKENS, 1)
    assert result.abstained


@pytest.mark.parametrize(("check", "code"), [("http500", "http"), ("timeout", "timeout")])
async def test_a_failing_check_leaves_the_answer_and_a_neutral_signal(
    fault_server,  # noqa: ANN001
    check: str,
    code: str,
) -> None:
    t = tier(fault_server.base_url, f"ok:{ANSWER}|check={check}", timeout=1.0)
    events, result = await run([t], support_check=check_of(t))
    attempt = result.attempts[0]
    assert attempt.outcome == "accepted", attempt
    assert result.text.strip() == ANSWER and not result.abstained and not result.error_code
    assert "".join(e.text for e in events if e.kind == "delta").strip() == ANSWER
    assert attempt.check["error"] == code and attempt.check["p_yes"] is None
    assert "check_yes" not in attempt.signals
    # Neutral: the score is the one an average check (the stored mean) would give.
    neutral = score_signals({**attempt.signals, "check_yes": 0.6}, WEIGHTS)
    assert attempt.score == pytest.approx(neutral)
    assert score_signals({**attempt.signals, "check_yes": 0.0}, WEIGHTS) < attempt.score
    # A check the server never answered costs nothing.
    assert attempt.check["cost"] == 0 and attempt.cost == attempt.call_cost


async def test_check_is_skipped_where_it_cannot_change_the_decision(fault_server) -> None:  # noqa: ANN001
    before = len(fault_server.requests)
    _, result = await run(
        [t := tier(fault_server.base_url, f"ok:{ANSWER}|check=ok:yes", threshold=0.0)],
        support_check=check_of(t),
    )
    assert result.attempts[0].check is None and len(fault_server.requests) == before + 1
    _, result = await run(
        [t := tier(fault_server.base_url, "ok:I don't know.|check=ok:yes")],
        support_check=check_of(t),
    )
    assert result.attempts[0].check is None and result.abstained
    # Off (None): no check at all.
    _, result = await run([tier(fault_server.base_url, f"ok:{ANSWER}|check=ok:yes")])
    assert result.attempts[0].check is None and "check_yes" not in result.attempts[0].signals


async def test_check_on_the_real_small_model(small_model_server) -> None:  # noqa: ANN001
    t = tier(small_model_server.base_url, "smollm2-135m", threshold=0.5, timeout=60)
    messages = [
        {
            "role": "system",
            "content": "Answer from the passages only.\n\nPassages:\n[1] "
            + PASSAGES[0]
            + "\n[2] "
            + PASSAGES[1],
        },
        {"role": "user", "content": "How long do I have to return an item?"},
    ]
    _, result = await run([t], messages=messages, support_check=check_of(t))
    attempt = result.attempts[0]
    assert attempt.check is not None and attempt.check["error"] == ""
    p_yes = attempt.check["p_yes"]
    assert p_yes is not None and 0.0 <= p_yes <= 1.0
    assert attempt.signals["check_yes"] == pytest.approx(p_yes)
    assert attempt.check["tokens_in"] > 0 and attempt.tokens_in > 0
    assert attempt.check["tokens_out"] == 1
    assert attempt.call_cost == t.cost(attempt.tokens_in, attempt.tokens_out)
    assert attempt.check["cost"] > 0
