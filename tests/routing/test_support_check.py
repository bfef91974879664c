"""The support check: a paid yes/no follow-up on the same prefix; failures leave the answer alone."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from chatbot.prompts import SUPPORT_CHECK_PROMPT
from routing.cascade import CascadeTier, cascade_run, p_yes_from_top
from routing.evaluation import Row, replay_question
from routing.providers import ProviderConfig
from routing.scorer import score_signals, scorer_fit
from tests.routing.fault_server import PROMPT_TOKENS

ABSTAIN = "I don't know: ask support."
ANSWER = "Returns are accepted within 30 days [1]"
PASSAGES = ["Returns are accepted within 30 days of delivery."]
# A scorer that leans on the check: a missing check must be neutral (its stored mean, 0.6).
WEIGHTS = {"bias": 0.0, "check_yes": 4.0, "check_yes_neutral": 0.6}


def tier(base_url: str, model: str, *, threshold: float = 0.5, timeout: float = 1.0) -> CascadeTier:
    return CascadeTier(
        name="t",
        config=ProviderConfig(
            name="t",
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
    events = [
        event
        async for event in cascade_run(
            tiers=tiers,
            build_messages=lambda t: (
                messages or [{"role": "user", "content": "How long for returns?"}]
            ),
            question="How long do I have to return an item?",
            passage_texts=PASSAGES,
            passage_similarities=[0.8],
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


async def test_check_reads_p_yes_is_billed_and_reuses_the_answer_prompt(fault_server) -> None:  # noqa: ANN001
    t = tier(fault_server.base_url, f"ok:{ANSWER}|check=ok:yes")
    before = len(fault_server.requests)
    _, result = await run([t], support_check=SUPPORT_CHECK_PROMPT)
    attempt = result.attempts[0]
    assert attempt.outcome == "accepted" and result.text.strip() == ANSWER
    assert attempt.signals["check_yes"] == pytest.approx(1.0)
    assert attempt.check["p_yes"] == pytest.approx(1.0) and attempt.check["error"] == ""
    # Answer and check are both paid: 2 x PROMPT_TOKENS in, the answer's words + 1 out.
    answer_out = len(ANSWER.split())
    assert attempt.tokens_in == 2 * PROMPT_TOKENS
    assert attempt.tokens_out == answer_out + 1
    assert attempt.cost == t.cost(2 * PROMPT_TOKENS, answer_out + 1)
    assert attempt.check["cost"] == pytest.approx(float(t.cost(PROMPT_TOKENS, 1)))
    answer_call, check_call = fault_server.requests[before:]
    assert check_call["max_tokens"] == 1 and check_call["logprobs"] is True
    # The check's prompt is the answer's prompt, then the answer, then the question.
    assert check_call["messages"][: len(answer_call["messages"])] == answer_call["messages"]
    assert check_call["messages"][-2]["role"] == "assistant"
    assert check_call["messages"][-2]["content"].strip() == ANSWER
    assert check_call["messages"][-1] == {"role": "user", "content": SUPPORT_CHECK_PROMPT}
    assert attempt.as_dict()["check"]["p_yes"] == pytest.approx(1.0)


@pytest.mark.parametrize(("check", "code"), [("http500", "http"), ("timeout", "timeout")])
async def test_a_failing_check_leaves_the_answer_and_a_neutral_signal(
    fault_server,  # noqa: ANN001
    check: str,
    code: str,
) -> None:
    t = tier(fault_server.base_url, f"ok:{ANSWER}|check={check}", timeout=1.0)
    started = time.perf_counter()
    events, result = await run([t], support_check=SUPPORT_CHECK_PROMPT)
    elapsed = time.perf_counter() - started
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
    # Bounded by the tier's timeout (1 s), not the server's 5 s sleep.
    assert elapsed < 4.0


async def test_check_is_skipped_where_it_cannot_change_the_decision(fault_server) -> None:  # noqa: ANN001
    before = len(fault_server.requests)
    _, result = await run(
        [tier(fault_server.base_url, f"ok:{ANSWER}|check=ok:yes", threshold=0.0)],
        support_check=SUPPORT_CHECK_PROMPT,
    )
    assert result.attempts[0].check is None and len(fault_server.requests) == before + 1
    _, result = await run(
        [tier(fault_server.base_url, "ok:I don't know.|check=ok:yes")],
        support_check=SUPPORT_CHECK_PROMPT,
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
            "content": "Answer from the passages only.\n\nPassages:\n[1] " + PASSAGES[0],
        },
        {"role": "user", "content": "How long do I have to return an item?"},
    ]
    _, result = await run([t], messages=messages, support_check=SUPPORT_CHECK_PROMPT)
    attempt = result.attempts[0]
    assert attempt.check is not None and attempt.check["error"] == ""
    p_yes = attempt.check["p_yes"]
    assert p_yes is not None and 0.0 <= p_yes <= 1.0
    assert attempt.signals["check_yes"] == pytest.approx(p_yes)
    # The check's prompt holds the answer prompt, the answer and the question: more tokens in.
    assert attempt.check["tokens_in"] > attempt.tokens_in - attempt.check["tokens_in"] > 0
    assert attempt.check["tokens_out"] == 1
    assert attempt.cost == t.cost(attempt.tokens_in, attempt.tokens_out)
    assert attempt.check["cost"] > 0


def test_fit_stores_the_neutral_value_and_replay_drops_the_check_where_not_asked() -> None:
    signals = [
        {"check_yes": 0.9},
        {"check_yes": 0.8},
        {},  # check missing: filled with the mean of the others
        {"check_yes": 0.1},
        {"check_yes": 0.2},
    ]
    report = scorer_fit(signals=signals, labels=[True, True, True, False, False], l2=0.1)
    assert report.weights["check_yes"] > 0
    assert report.weights["check_yes_neutral"] == pytest.approx(0.5)
    row = Row(
        question_id="q",
        source="squad",
        answerable=True,
        split="test",
        tiers={
            "large": {
                "f1": 1.0,
                "score": 0.9,
                "cost": 3.0,
                "latency_ms": 30.0,
                "abstained": False,
                "check_cost": 1.0,
                "check_latency_ms": 10.0,
            }
        },
        top_similarity=0.8,
    )
    assert replay_question(row, tiers=["large"], thresholds=[0.0]).cost == 2.0
    assert replay_question(row, tiers=["large"], thresholds=[0.5]).cost == 3.0
