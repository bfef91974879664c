"""The cascade: try tiers cheapest first, score each answer, escalate below the tier's threshold.

Plain data in, plain events out: the pipeline (chatbot) builds each tier's prompt and the
passages it shows before the cascade runs, and turns the events below into protocol frames.
Rules:

- a question whose best passage is below the relevance floor never reaches the cascade
  (`below_floor`, applied by the pipeline; the evaluation's replay applies the same test);
- a failure before the first token the customer saw falls through to the next tier (a
  buffered, never-shown draft that breaks falls through too); after the first shown token the
  answer is interrupted (no silent fallback mid-answer);
- a tier without its API key is skipped with a warning, never a crash;
- `decide`: an answer is accepted when it does not say "I don't know" and its score reaches
  the tier's threshold; otherwise the next tier is tried. On the last tier a low score or an
  "I don't know" gives the abstention text instead of a guess (unless `accept_last` is set, as
  the evaluation does for "tier alone" rows). The evaluation's replay calls `decide` too;
- every call is paid as the server reports it; a call the server never answered (refused,
  HTTP error, timeout before the response) costs 0; a call cut short before the server
  reported usage (stop, disconnect, broken stream) is counted here and marked `estimated`;
- the whole answer has a deadline (`deadline`, a loop time): a tier still running then fails
  with code "deadline" like any provider error;
- with `support_check` (`SupportCheck`, setting `CASCADE_SUPPORT_CHECK`), after a tier answers,
  the check's tier is asked, with max_tokens=1, whether the one passage the answer cites (the
  most relevant one when it cites none) states the answer to the question; P(yes) normalised
  over yes/no becomes the `check_yes` signal. The answer itself is not shown: the question is
  whether the passage answers the question, which a 1.5B model judges far better (AUC 0.78
  against near misses) than whether a set of passages supports a given answer (0.52-0.59).
  The check is paid (in `attempt.cost` and `attempt.check`, never in the answer call's tokens)
  at the check tier's prices, asked once per passage within an answer (a later tier citing the
  same passage reuses it at no cost), and bounded by the check tier's timeout; when it fails
  the answer stands and the signal is missing, which the scorer treats as neutral. It is not
  asked when it cannot change the decision (an "I don't know", or a threshold of 0), except
  when `accept_last` is set (the evaluation records it for the replay).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from routing.providers import (
    Generation,
    OpenAICompatibleProvider,
    ProviderConfig,
    ProviderError,
    call_price,
)
from routing.scorer import (
    ScoringInput,
    cited_passage,
    says_dont_know,
    score_signals,
    signals_extract,
)
from routing.tokens import TierCounter, count_tokens_for_tier

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
StreamMode = Literal["stream", "buffer"]


def below_floor(
    *,
    top_similarity: float,
    floor: float,
    top_relevance: float | None = None,
    rerank_floor: float = 0.0,
) -> bool:
    """True when the best passage is too far from the question for any tier to answer from it:
    its cosine is below `floor`, or (when reranked) its cross-encoder relevance is below
    `rerank_floor`."""
    if top_similarity < floor:
        return True
    return top_relevance is not None and top_relevance < rerank_floor


def tiers_from_start(names: Sequence[str], start: str) -> list[str]:
    """Tiers (cheapest first) from the starting tier upwards; all of them if it is not among them."""
    names = list(names)
    return names[names.index(start) :] if start in names else names


def decide(*, score: float, threshold: float, said_dont_know: bool) -> str:
    """'accepted', 'dont_know' or 'low_score' for one scored answer."""
    if said_dont_know:
        return "dont_know"
    return "accepted" if score >= threshold else "low_score"


@dataclass(frozen=True)
class CascadeTier:
    """One tier as the cascade sees it (no ORM object), with the prompt built for it.

    `passage_texts` and `passage_similarities` are the passages this tier's prompt shows, in
    the prompt's order: a citation [n] in its answer refers to the n-th of them.
    """

    name: str
    config: ProviderConfig
    threshold: float
    price_input_per_mtok: Decimal
    price_output_per_mtok: Decimal
    max_answer_tokens: int
    context_window: int
    local: bool = True
    counter: TierCounter | None = None  # the tier's own tokenizer (see routing.tokens)
    messages: Messages = field(default_factory=list)
    passage_texts: Sequence[str] = ()
    passage_similarities: Sequence[float] = ()
    passage_relevance: Sequence[float] = ()  # cross-encoder relevance; empty: not reranked

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        """Price of one call from its token counts."""
        return call_price(
            price_input_per_mtok=self.price_input_per_mtok,
            price_output_per_mtok=self.price_output_per_mtok,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    def count(self, text: str) -> int:
        """Tokens a text costs on this tier (for calls whose usage the server never reported)."""
        if self.counter is not None:
            return self.counter.count(text)
        return count_tokens_for_tier(text, local=self.local)


@dataclass
class Attempt:
    """One tier's try: what it cost and why it was accepted or not."""

    tier: str
    # accepted, low_score, dont_know, abstained, error:<code>, skipped:<code>, cancelled
    outcome: str = ""
    score: float | None = None
    signals: dict[str, float] = field(default_factory=dict)
    said_dont_know: bool = False
    error: str = ""  # the provider error's code, when the call failed
    # The answer call alone (what "the largest tier alone" would have paid for this prompt).
    tokens_in: int = 0
    tokens_out: int = 0
    call_cost: Decimal = Decimal("0")
    # Everything this attempt paid: the answer call and its support check.
    cost: Decimal = Decimal("0")
    estimated: bool = False  # tokens counted here: the server reported no usage
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    text: str = ""
    # The support check when it was asked: tier, passage (a key of the passage asked about),
    # p_yes (None when missing), tokens_in, tokens_out, cost, latency_ms, error ("" or a
    # ProviderError code), estimated, reused (the same passage's check earlier in this answer).
    check: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (costs as floats) for answer.end and Message.attempts."""
        data = asdict(self)
        data["cost"] = float(self.cost)
        data["call_cost"] = float(self.call_cost)
        data["score"] = None if self.score is None else round(self.score, 4)
        data["signals"] = {k: round(v, 4) for k, v in self.signals.items()}
        data["latency_ms"] = round(self.latency_ms, 1)
        del data["text"]
        return data


@dataclass
class CascadeResult:
    """The cascade's outcome: the accepted attempt (or none), the text, every attempt.

    The caller may pass its own (empty) result in: it is filled as the cascade goes, so an
    answer that is stopped or fails half-way still shows every attempt that ran and its cost.
    """

    text: str = ""
    tier: str | None = None
    accepted: Attempt | None = None
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
        """Prompt tokens over all calls (answer calls and support checks)."""
        return sum(a.tokens_in + int((a.check or {}).get("tokens_in", 0)) for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        """Answer tokens over all calls (answer calls and support checks)."""
        return sum(a.tokens_out + int((a.check or {}).get("tokens_out", 0)) for a in self.attempts)

    @property
    def estimated(self) -> bool:
        """True when some of the cost was counted here rather than reported by a server."""
        return any(a.estimated or (a.check or {}).get("estimated") for a in self.attempts)


@dataclass(frozen=True)
class SupportCheck:
    """The answerability check: `tier` (its own prompt, prices and timeout) is asked, as
    `system` then `user` (a template with {passage} and {question}), whether a passage states
    the answer to a question."""

    tier: CascadeTier
    system: str
    user: str

    def messages(self, *, question: str, passage: str) -> Messages:
        """The check's prompt for one question and passage."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(passage=passage, question=question)},
        ]


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


async def cascade_run(
    *,
    tiers: Sequence[CascadeTier],
    question: str,
    abstain_text: str,
    weights: Mapping[str, float] | None = None,
    stream_mode: StreamMode = "stream",
    accept_last: bool = False,
    support_check: SupportCheck | None = None,
    deadline: float | None = None,
    result: CascadeResult | None = None,
) -> AsyncIterator[CascadeEvent]:
    """Run tiers in order; yield CascadeEvents, the last one 'done' with the CascadeResult."""
    result = result if result is not None else CascadeResult()
    started = time.perf_counter()
    shown = ""  # what the customer currently sees
    previous: str | None = None
    previous_reason = ""
    checks: dict[str, dict[str, Any]] = {}  # passage key -> its check, asked once per answer
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
        generation = Generation()
        live = stream_mode == "stream" or last
        failure: ProviderError | None = None
        try:
            # Closed on the way out, whatever the way: the server stops generating at once.
            async with aclosing(
                _stream(provider, tier, tier.messages, generation, deadline)
            ) as deltas:
                async for delta in deltas:
                    if live:
                        if result.ttft_ms is None:
                            result.ttft_ms = (time.perf_counter() - started) * 1000
                        shown += delta
                        yield CascadeEvent("delta", text=delta, tier=tier.name)
        except ProviderError as exc:
            failure = exc
        except BaseException as exc:
            # Stopped, disconnected or failed mid-call: what ran is paid all the same.
            _account(attempt, tier, generation, tier.messages)
            attempt.text = generation.text
            cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
            attempt.outcome = "cancelled" if cancelled else "error:internal"
            raise
        _account(attempt, tier, generation, tier.messages)
        attempt.text = generation.text
        if failure is not None:
            attempt.outcome, attempt.error = f"error:{failure.code}", failure.code
            logger.warning("tier %s failed (%s): %s", tier.name, failure.code, failure)
            if failure.started and live:
                # The customer saw the start: a half answer must not pass for a whole one.
                result.text, result.tier = generation.text, tier.name
                result.error_code, result.interrupted = failure.code, True
                yield CascadeEvent("done", result=result)
                return
            # Nothing of it was shown (no token, or a buffered draft): the next tier answers.
            result.error_code = failure.code
            continue
        attempt.signals = signals_extract(
            ScoringInput(
                question=question,
                answer=generation.text,
                token_logprobs=generation.token_logprobs,
                first_top_logprobs=generation.first_top_logprobs,
                passage_texts=tier.passage_texts,
                passage_similarities=tier.passage_similarities,
                passage_relevance=tier.passage_relevance,
            )
        )
        attempt.said_dont_know = says_dont_know(generation.text)
        cited = cited_passage(
            generation.text, list(tier.passage_relevance or tier.passage_similarities)
        )
        if (
            support_check
            and cited is not None
            and not attempt.said_dont_know
            and (tier.threshold > 0 or accept_last)
        ):
            passage = tier.passage_texts[cited]
            key = passage_key(passage)
            if key in checks:
                check = {**checks[key], "cost": 0.0, "tokens_in": 0, "tokens_out": 0}
                check.update(latency_ms=0.0, estimated=False, reused=True)
            else:
                check = checks[key] = await support_check_run(
                    check=support_check, question=question, passage=passage
                )
            attempt.check = check
            attempt.cost += Decimal(str(check["cost"]))
            if check["p_yes"] is not None:
                attempt.signals["check_yes"] = check["p_yes"]
        attempt.score = score_signals(attempt.signals, weights)
        outcome = decide(
            score=attempt.score,
            threshold=0.0 if (accept_last and last) else tier.threshold,
            said_dont_know=attempt.said_dont_know,
        )
        attempt.outcome = outcome
        result.error_code = ""
        if outcome == "accepted":
            result.text, result.tier, result.accepted = generation.text, tier.name, attempt
            if not live:
                if result.ttft_ms is None:
                    result.ttft_ms = (time.perf_counter() - started) * 1000
                yield CascadeEvent("delta", text=generation.text, tier=tier.name)
            yield CascadeEvent("done", result=result)
            return
        previous, previous_reason = tier.name, outcome
    # No tier accepted: say so plainly rather than guess (or report the failure).
    scored = [a for a in result.attempts if a.score is not None]
    if not scored:
        # Nothing was answered at all (every tier failed or was skipped): an error, no tier.
        result.error_code = result.error_code or "no_tier"
        yield CascadeEvent("done", result=result)
        return
    if result.attempts[-1].outcome in {"low_score", "dont_know"}:
        result.abstain_reason = result.attempts[-1].outcome
        result.attempts[-1].outcome = "abstained"
    else:
        # A lower tier was scored, the last one failed: decline, and keep the failure's code.
        result.abstain_reason = "no_answer"
    result.abstained, result.text, result.tier = True, abstain_text, scored[-1].tier
    if shown:
        yield CascadeEvent("escalate", from_tier=previous, to_tier=None, reason="abstain")
    if result.ttft_ms is None:
        result.ttft_ms = (time.perf_counter() - started) * 1000
    yield CascadeEvent("delta", text=abstain_text)
    yield CascadeEvent("done", result=result)


async def _stream(
    provider: OpenAICompatibleProvider,
    tier: CascadeTier,
    messages: Messages,
    generation: Generation,
    deadline: float | None,
) -> AsyncIterator[str]:
    """The provider's deltas, each read bounded by the answer's deadline (no yield inside it)."""
    iterator = provider.stream(
        messages=messages, max_tokens=tier.max_answer_tokens, generation=generation
    ).__aiter__()
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    delta = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise ProviderError(
                    "deadline",
                    f"{tier.name} ran past the answer's deadline",
                    started=bool(generation.text),
                ) from exc
            yield delta
    finally:
        await iterator.aclose()


async def tier_call(*, tier: CascadeTier, messages: Messages, max_tokens: int) -> Attempt:
    """One call to a tier outside the cascade (e.g. the follow-up rewrite), accounted the same
    way; never raises: a failure leaves `error` set and the text empty or partial."""
    attempt = Attempt(tier=tier.name)
    generation = Generation()
    try:
        provider = OpenAICompatibleProvider(tier.config)
        async for _ in provider.stream(
            messages=messages, max_tokens=max_tokens, generation=generation
        ):
            pass
    except ProviderError as exc:
        attempt.error, attempt.outcome = exc.code, f"error:{exc.code}"
    _account(attempt, tier, generation, messages)
    attempt.text = generation.text
    return attempt


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


def passage_key(text: str) -> str:
    """A short stable key of a passage's text (checks are asked once per passage)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


async def support_check_run(*, check: SupportCheck, question: str, passage: str) -> dict[str, Any]:
    """Ask the check's tier whether `passage` states the answer to `question`; never raises
    (errors are recorded, and the signal is then missing)."""
    tier = check.tier
    check_messages = check.messages(question=question, passage=passage)
    generation = Generation()
    error = ""
    started = time.perf_counter()

    async def drain() -> None:
        provider = OpenAICompatibleProvider(tier.config)
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
    paid = Attempt(tier=tier.name)
    _account(paid, tier, generation, check_messages)
    return {
        "tier": tier.name,
        "passage": passage_key(passage),
        "p_yes": None if error else p_yes_from_top(generation.first_top_logprobs),
        "tokens_in": paid.tokens_in,
        "tokens_out": paid.tokens_out,
        "cost": float(paid.call_cost),
        "estimated": paid.estimated,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "error": error,
    }


def call_usage(*, generation: Generation, messages: Messages, count: Any) -> tuple[int, int, bool]:
    """(tokens_in, tokens_out, estimated) for one call.

    The server's usage when it reported it; 0 when the server never answered (nothing was
    processed, nothing is billed); otherwise counted here from the prompt and the text that
    arrived, and marked estimated.
    """
    if generation.tokens_in is not None:
        return generation.tokens_in, generation.tokens_out or 0, False
    if not generation.responded:
        return 0, 0, False
    tokens_in = sum(count(m["content"]) for m in messages)
    # One log-probability per generated token: the server's own count of what it produced.
    tokens_out = len(generation.token_logprobs) or (
        count(generation.text) if generation.text else 0
    )
    return tokens_in, tokens_out, True


def _account(
    attempt: Attempt, tier: CascadeTier, generation: Generation, messages: Messages
) -> None:
    attempt.tokens_in, attempt.tokens_out, attempt.estimated = call_usage(
        generation=generation, messages=messages, count=tier.count
    )
    attempt.call_cost = tier.cost(attempt.tokens_in, attempt.tokens_out)
    attempt.cost = attempt.call_cost
    attempt.latency_ms = generation.total_ms or 0.0
    attempt.ttft_ms = generation.ttft_ms
