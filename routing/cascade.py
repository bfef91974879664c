"""The cascade: try tiers cheapest first, score each answer, escalate below the tier's threshold.

Plain data in, plain events out: the pipeline (chatbot) builds the prompt for each tier
through a callback, hands passages over as texts and similarities, and turns the events
below into protocol frames. Rules:

- a failure before the first token falls through to the next tier (the reason is kept);
  after the first token the answer is interrupted (no silent fallback mid-answer);
- a tier without its API key is skipped with a warning, never a crash;
- an answer is accepted when it does not say "I don't know" and its score reaches the
  tier's threshold; otherwise the next tier is tried;
- on the last tier a low score or an "I don't know" gives the abstention text instead
  of a guess (unless `accept_last` is set, as the evaluation does for "tier alone" rows);
- with `support_check` (a yes/no question, `CASCADE_SUPPORT_CHECK`), after a tier answers the
  same tier is asked it as a follow-up turn of the same conversation (its prompt is the answer
  prompt plus the answer: llama.cpp reuses the cached prefix), with max_tokens=1; P(yes)
  normalised over yes/no becomes the `check_yes` signal. The check is paid (its tokens and
  cost are in the attempt and in `attempt.check`) and bounded by the tier's timeout; when it
  fails the answer stands and the signal is missing, which the scorer treats as neutral. It
  is not asked when it cannot change the decision (an "I don't know", or a threshold of 0),
  except when `accept_last` is set (the evaluation records it for the replay).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from routing.providers import Generation, OpenAICompatibleProvider, ProviderConfig, ProviderError
from routing.scorer import ScoringInput, says_dont_know, score_signals, signals_extract
from routing.tokens import count_tokens

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
StreamMode = Literal["stream", "buffer"]


@dataclass(frozen=True)
class CascadeTier:
    """One tier as the cascade sees it (no ORM object)."""

    name: str
    config: ProviderConfig
    threshold: float
    price_input_per_mtok: Decimal
    price_output_per_mtok: Decimal
    max_answer_tokens: int
    context_window: int

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        """Price of one call from its token counts."""
        return (
            self.price_input_per_mtok * tokens_in + self.price_output_per_mtok * tokens_out
        ) / Decimal(1_000_000)


@dataclass
class Attempt:
    """One tier's try: what it cost and why it was accepted or not."""

    tier: str
    outcome: str = ""  # accepted, low_score, dont_know, abstained, error:<code>, skipped:<code>
    score: float | None = None
    signals: dict[str, float] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal("0")
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    text: str = ""
    # The support check when it was asked: p_yes (None when missing), tokens_in, tokens_out,
    # cost, latency_ms, error ("" or a ProviderError code). Included in the totals above.
    check: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (cost as float) for answer.end and Message.attempts."""
        data = asdict(self)
        data["cost"] = float(self.cost)
        data["score"] = None if self.score is None else round(self.score, 4)
        data["signals"] = {k: round(v, 4) for k, v in self.signals.items()}
        data["latency_ms"] = round(self.latency_ms, 1)
        del data["text"]
        return data


@dataclass
class CascadeResult:
    """The cascade's outcome: the accepted tier (or none), the text, every attempt."""

    text: str = ""
    tier: str | None = None
    abstained: bool = False
    abstain_reason: str = ""
    error_code: str = ""
    interrupted: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    ttft_ms: float | None = None  # first text the customer saw

    @property
    def cost(self) -> Decimal:
        """Every attempt is paid for."""
        return sum((a.cost for a in self.attempts), Decimal("0"))

    @property
    def tokens_in(self) -> int:
        """Prompt tokens over all attempts."""
        return sum(a.tokens_in for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        """Answer tokens over all attempts."""
        return sum(a.tokens_out for a in self.attempts)


@dataclass(frozen=True)
class CascadeEvent:
    """kind: 'attempt' (a tier starts), 'delta', 'escalate' (from_tier, to_tier, reason), 'done'."""

    kind: str
    text: str = ""
    tier: str | None = None
    from_tier: str | None = None
    to_tier: str | None = None
    reason: str = ""
    result: CascadeResult | None = None


def decide(*, score: float, threshold: float, said_dont_know: bool) -> str:
    """'accepted', 'dont_know' or 'low_score' for one scored answer."""
    if said_dont_know:
        return "dont_know"
    return "accepted" if score >= threshold else "low_score"


async def cascade_run(
    *,
    tiers: Sequence[CascadeTier],
    build_messages: Callable[[CascadeTier], Messages],
    question: str,
    passage_texts: Sequence[str],
    passage_similarities: Sequence[float],
    abstain_text: str,
    weights: Mapping[str, float] | None = None,
    stream_mode: StreamMode = "stream",
    accept_last: bool = False,
    support_check: str | None = None,
) -> AsyncIterator[CascadeEvent]:
    """Run tiers in order; yield CascadeEvents, the last one 'done' with the CascadeResult."""
    result = CascadeResult()
    started = time.perf_counter()
    shown = ""  # what the customer currently sees
    previous: str | None = None
    previous_reason = ""
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        attempt = Attempt(tier=tier.name)
        result.attempts.append(attempt)
        try:
            provider = OpenAICompatibleProvider(tier.config)
        except ProviderError as exc:
            logger.warning("tier %s skipped: %s", tier.name, exc)
            attempt.outcome = f"skipped:{exc.code}"
            continue
        if previous is not None:
            # Streamed drafts are replaced by the next tier; buffered ones were never shown.
            yield CascadeEvent(
                "escalate", from_tier=previous, to_tier=tier.name, reason=previous_reason
            )
            shown = ""
        yield CascadeEvent("attempt", tier=tier.name)
        messages = build_messages(tier)
        generation = Generation()
        live = stream_mode == "stream" or last
        try:
            async for delta in provider.stream(
                messages=messages, max_tokens=tier.max_answer_tokens, generation=generation
            ):
                if live:
                    if result.ttft_ms is None:
                        result.ttft_ms = (time.perf_counter() - started) * 1000
                    shown += delta
                    yield CascadeEvent("delta", text=delta, tier=tier.name)
        except ProviderError as exc:
            _account(attempt, tier, generation, messages)
            attempt.outcome = f"error:{exc.code}"
            logger.warning("tier %s failed (%s): %s", tier.name, exc.code, exc)
            if exc.started:
                # Fall back only before the first token: a half answer must not pass for whole.
                result.text, result.tier = generation.text, tier.name
                result.error_code, result.interrupted = exc.code, True
                yield CascadeEvent("done", result=result)
                return
            result.error_code = exc.code
            continue
        _account(attempt, tier, generation, messages)
        attempt.text = generation.text
        attempt.signals = signals_extract(
            ScoringInput(
                question=question,
                answer=generation.text,
                token_logprobs=generation.token_logprobs,
                first_top_logprobs=generation.first_top_logprobs,
                passage_texts=passage_texts,
                passage_similarities=passage_similarities,
            )
        )
        said_dont_know = says_dont_know(generation.text)
        if support_check and not said_dont_know and (tier.threshold > 0 or accept_last):
            check = await support_check_run(
                provider=provider,
                tier=tier,
                messages=messages,
                answer=generation.text,
                prompt=support_check,
            )
            attempt.check = check
            attempt.tokens_in += check["tokens_in"]
            attempt.tokens_out += check["tokens_out"]
            attempt.cost += tier.cost(check["tokens_in"], check["tokens_out"])
            attempt.latency_ms += check["latency_ms"]
            if check["p_yes"] is not None:
                attempt.signals["check_yes"] = check["p_yes"]
        attempt.score = score_signals(attempt.signals, weights)
        outcome = decide(
            score=attempt.score,
            threshold=0.0 if (accept_last and last) else tier.threshold,
            said_dont_know=said_dont_know,
        )
        attempt.outcome = outcome
        result.error_code = ""
        if outcome == "accepted":
            result.text, result.tier = generation.text, tier.name
            if not live:
                if result.ttft_ms is None:
                    result.ttft_ms = (time.perf_counter() - started) * 1000
                yield CascadeEvent("delta", text=generation.text, tier=tier.name)
            yield CascadeEvent("done", result=result)
            return
        previous, previous_reason = tier.name, outcome
    # No tier accepted: say so plainly rather than guess (or report the failure).
    if result.error_code and not any(a.score is not None for a in result.attempts):
        yield CascadeEvent("done", result=result)
        return
    if result.attempts and result.attempts[-1].outcome in {"low_score", "dont_know"}:
        result.abstain_reason = result.attempts[-1].outcome
        result.attempts[-1].outcome = "abstained"
    else:
        result.abstain_reason = "no_answer"
    result.abstained, result.text, result.tier = True, abstain_text, previous
    if shown:
        yield CascadeEvent("escalate", from_tier=previous, to_tier=None, reason="abstain")
    if result.ttft_ms is None:
        result.ttft_ms = (time.perf_counter() - started) * 1000
    yield CascadeEvent("delta", text=abstain_text)
    yield CascadeEvent("done", result=result)


def p_yes_from_top(top_logprobs: Mapping[str, float]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from a first token's alternatives; None when neither is there."""
    yes = no = 0.0
    for token, logprob in top_logprobs.items():
        word = token.strip().strip(".!,\"'").lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else None


async def support_check_run(
    *,
    provider: OpenAICompatibleProvider,
    tier: CascadeTier,
    messages: Messages,
    answer: str,
    prompt: str,
) -> dict[str, Any]:
    """Ask the tier whether its passages state its answer; never raises (errors are recorded).

    The answer's messages, then the answer as the assistant's turn, then `prompt`: the prefix
    is the answer call's, so a llama.cpp server prefills only the last turn.
    """
    check_messages = [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": prompt},
    ]
    generation = Generation()
    error = ""
    started = time.perf_counter()

    async def drain() -> None:
        async for _ in provider.stream(
            messages=check_messages, max_tokens=1, generation=generation
        ):
            pass

    try:
        await asyncio.wait_for(drain(), timeout=tier.config.timeout_seconds)
    except ProviderError as exc:
        error = exc.code
    except TimeoutError:
        error = "timeout"
    except Exception as exc:  # noqa: BLE001 - a check must never fail the answer
        logger.exception("support check on tier %s failed", tier.name)
        error = type(exc).__name__
    if error:
        logger.warning("support check on tier %s failed (%s)", tier.name, error)
    check = Attempt(tier=tier.name)
    _account(check, tier, generation, check_messages)
    return {
        "p_yes": None if error else p_yes_from_top(generation.first_top_logprobs),
        "tokens_in": check.tokens_in,
        "tokens_out": check.tokens_out,
        "cost": float(check.cost),
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "error": error,
    }


def _account(
    attempt: Attempt, tier: CascadeTier, generation: Generation, messages: Messages
) -> None:
    # Bill from the provider's usage; count tokens only when it reports none.
    attempt.tokens_in = (
        generation.tokens_in
        if generation.tokens_in is not None
        else sum(count_tokens(m["content"]) for m in messages)
    )
    attempt.tokens_out = (
        generation.tokens_out
        if generation.tokens_out is not None
        else (count_tokens(generation.text) if generation.text else 0)
    )
    attempt.cost = tier.cost(attempt.tokens_in, attempt.tokens_out)
    attempt.latency_ms = generation.total_ms or 0.0
    attempt.ttft_ms = generation.ttft_ms
