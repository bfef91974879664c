"""The way of one question: retrieve, fit the prompt per tier, cascade, store the answer with provenance.

The chat consumer and the evaluation runner both enter here, through
`answer_question`. The steps are small functions so other features plug in at obvious
seams: the standalone question (history), the answer cache (lookup before retrieval, store
after an accepted answer), the daily budget (which tiers the cascade may use).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from django.db.models import Count, Sum

from chatbot import metrics
from chatbot.budget import budget_reserve, budget_settle, expected_call_tokens
from chatbot.history import (
    MESSAGE_OVERHEAD_TOKENS,
    Rewrite,
    conversation_turns,
    history_for_tier,
    question_rewrite,
)
from chatbot.models import Conversation, Message
from chatbot.prompts import (
    ABSTAIN_TEXT,
    SUPPORT_CHECK_SYSTEM,
    SUPPORT_CHECK_USER,
    build_messages,
    instructions,
    passage_defused,
    passage_line,
    passages_fit,
    passages_ordered,
    prompt_sent,
    question_message,
    system_prompt,
)
from retrieval import cache as answer_cache
from retrieval.embedders import cl100k_truncate, get_embedder
from retrieval.injection import question_attack
from retrieval.language import abstain_text, adetect_language, answer_instruction, cache_supports
from retrieval.rerank import passages_search_reranked
from retrieval.search import Passage
from retrieval.web import passages_linked
from routing.cascade import (
    CascadeResult,
    CascadeTier,
    SupportCheck,
    below_floor,
    cascade_run,
    tiers_from_start,
)
from routing.models import ModelTier, ScorerWeights, tiers_enabled
from routing.per_tier import count_for
from routing.policy import arelevance_floors
from routing.router import Route, route_choose, route_observe

logger = logging.getLogger(__name__)
T = TypeVar("T")

Event = dict[str, Any]


@dataclass
class AnswerOptions:
    """Who is asking and, for an evaluation, which tiers exactly (one clearly named object).

    `tiers` set: exactly these tiers in this order, with no answer cache and no daily budget
    (an evaluation measures the models). `origin` keeps evaluation and demo answers out of
    customers' figures and the budget.
    """

    origin: str = Message.Origin.CUSTOMER
    tiers: list[str] | None = None
    accept_last: bool = False  # the last tier's answer is kept whatever its score
    stream_mode: str | None = None
    # One enabled tier alone instead of the policy, still a customer's answer (cache, budget).
    single_tier: str | None = None
    # The turns before the question, oldest first, when the caller holds them (the HTTP API's
    # `messages`) rather than the stored conversation.
    history: list[dict[str, str]] | None = None
    # The question opened its conversation: no turns to read before it, and the conversation's
    # totals are this answer's own (two statements fewer for most customers' questions).
    new_conversation: bool = False
    # (API key id, its daily cap in USD): the answer's reservation must fit it too.
    key_cap: tuple[int, Decimal] | None = None
    # The caller's cap on the answer's tokens (the HTTP API's max_tokens), where it is below a
    # tier's own. An answer it cuts short is not cached (another customer would get the stub)
    # nor learnt from by the router (it says little of how well the tier answers).
    max_answer_tokens: int | None = None


@dataclass
class RunControl:
    """Shared between the caller and a running answer: why it was cancelled, and the answer.

    The caller sets `cancel_reason` before cancelling (stopped, interrupted); an answer that
    fails any other way is stored as an error. `answer` is the answer being built (set as soon
    as the assistant message exists): after the events end it holds the stored message and
    the cascade's result.
    """

    cancel_reason: str | None = None
    answer: Answer | None = None


@dataclass
class Answer:
    """One answer as the pipeline builds it: the stored message, what was shown, what it cost."""

    message: Message
    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    result: CascadeResult = field(default_factory=CascadeResult)
    top_similarity: float = 0.0  # the best retrieved passage's cosine (0: none)
    top_relevance: float | None = None  # its cross-encoder relevance (None: not reranked)
    # The tiers the baseline is chosen from (the books choose it when the answer is stored).
    baseline_pool: list[ModelTier] = field(default_factory=list)
    rewrite: Rewrite | None = None  # the follow-up rewrite (tier "" when no model call ran)
    # Each tier's prompt as built: (the chunks it quotes, its prompt tokens), for the books.
    shown: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)
    route: Route | None = None  # how the starting tier was chosen (the router learns from it)
    reserved: bool = False  # the daily budget holds a reservation for it
    started: float = field(default_factory=time.perf_counter)
    new_conversation: bool = False  # as AnswerOptions: its conversation's totals are its own
    cut: bool = False  # cut short by AnswerOptions.max_answer_tokens


@dataclass(frozen=True)
class TierPrompt:
    """A tier's prompt and the passages it shows, in the prompt's order (built before the cascade)."""

    tier: ModelTier
    passages: list[Passage]
    messages: list[dict[str, str]]
    prompt_tokens: int  # counted with the tier's tokenizer, role markers included

    def cascade_tier(self) -> CascadeTier:
        """The tier as the cascade sees it, with this prompt."""
        relevance = [p.relevance for p in self.passages]
        return self.tier.cascade_tier(
            messages=self.messages,
            passage_texts=[p.text for p in self.passages],
            passage_similarities=[p.similarity for p in self.passages],
            passage_relevance=[] if None in relevance else relevance,
        )

    def sources(self) -> list[dict[str, Any]]:
        """The provenance a citation [n] of this tier's answer refers to."""
        return [passage_source(n, p) for n, p in enumerate(self.passages, start=1)]

    def max_cost(
        self, check: SupportCheck | None = None, max_answer_tokens: int | None = None
    ) -> Decimal:
        """The most this tier's call can cost on this prompt (what the daily budget reserves),
        with the answerability check when one is asked (one passage of this prompt and the
        question: at most this prompt's tokens, one token out), and the caller's cap on the
        answer when it is below the tier's own."""
        tokens = self.tier.max_answer_tokens
        if max_answer_tokens is not None:
            tokens = min(tokens, max_answer_tokens)
        cost = self.tier.cost(self.prompt_tokens, tokens)
        return cost + (check.tier.cost(self.prompt_tokens, 1) if check else Decimal("0"))


def passage_source(number: int, passage: Passage) -> dict[str, Any]:
    """What an answer stores and shows for its citation [number] of this passage."""
    return {
        "n": number,
        "chunk_id": passage.chunk_id,
        "document_id": passage.document_id,
        "document_version": passage.document_version,
        "title": passage.title,
        "heading": passage.heading,
        # A PDF's page or a deck's slide number (shown as "page 4"); None for unpaged sources.
        "page": passage.page,
        "similarity": round(passage.similarity, 4),
        # A web page's citation opens the live page; a file's, the internal passage page.
        "url": passage.url or f"/passages/{passage.chunk_id}/",
    }


# --- Steps ----------------------------------------------------------------------------------


async def cascade_tiers(
    *,
    options: AnswerOptions,
    enabled: list[ModelTier],
    vector: list[float] | None = None,
    cached: bool = False,
) -> tuple[list[ModelTier], Route | None]:
    """The tiers this answer may use, cheapest first, and the route that chose them: from the
    starting tier upwards (the router's pick for this question's vector when the policy says
    so), or one tier alone. `cached`: a cached answer is at hand, so no tier will run."""
    if options.tiers is not None:
        by_name = {t.name: t async for t in ModelTier.objects.filter(name__in=options.tiers)}
        return [by_name[name] for name in options.tiers if name in by_name], None
    if not enabled:
        return [], None
    if options.single_tier is not None:
        return [t for t in enabled if t.name == options.single_tier], None
    if cached:
        # No start to choose (the policy read, the router's learner): the router learns only
        # from answers a tier gave, and every cache hit would pay for a choice never used.
        return enabled, None
    route = await sync_to_async(route_choose)(
        tiers=[t.name for t in enabled], vector=vector, default_start=settings.CASCADE_START_TIER
    )
    if route.cascade:
        names = tiers_from_start([t.name for t in enabled], route.start)
    else:
        names = [route.start]
    return [t for t in enabled if t.name in names], route


def baseline_tier(tiers: Sequence[ModelTier]) -> ModelTier | None:
    """The dearest of the tiers that could really answer (enabled, key present), by price:
    what "the largest tier alone" is priced on."""
    usable = [t for t in tiers if t.usable]
    if not usable:
        return None
    tokens_in, tokens_out = expected_call_tokens()
    return max(usable, key=lambda t: (t.cost(tokens_in, tokens_out), t.order))


async def support_check() -> SupportCheck | None:
    """The answerability check CASCADE_SUPPORT_CHECK names: a tier's name, "on" (the dearest
    enabled tier by price) or "off". The named tier need not be in the cascade (a policy may
    answer on medium alone and ask large whether the passage holds the answer); it must be
    usable (its key present)."""
    name = settings.CASCADE_SUPPORT_CHECK
    if name == "off":
        return None
    if name in {"on", "1", "true", "yes"}:
        tier = baseline_tier([t async for t in ModelTier.objects.filter(enabled=True)])
    else:
        tier = await ModelTier.objects.filter(name=name).afirst()
    if tier is None or tier.api_key is None:
        logger.warning("CASCADE_SUPPORT_CHECK=%s names no usable tier: no check", name)
        return None
    return SupportCheck(
        tier=tier.cascade_tier(), system=SUPPORT_CHECK_SYSTEM, user=SUPPORT_CHECK_USER
    )


async def scorer_weights() -> dict[str, float] | None:
    """The stored scorer weights (None: the scorer's documented defaults)."""
    row = await ScorerWeights.objects.filter(name=settings.SCORER_WEIGHTS_NAME).afirst()
    return dict(row.weights) if row and row.weights else None


async def retrieve(*, question: str, vector: list[float] | None = None) -> list[Passage]:
    """The passages retrieved for the question, best first (the relevance floor is the caller's);
    reranked by the cross-encoder when RETRIEVAL_RERANK is on."""
    passages = await passages_search_reranked(
        question=question,
        vector=vector,
        k=settings.RETRIEVAL_TOP_K,
        min_similarity=settings.RETRIEVAL_MIN_SIMILARITY,
    )
    # Defused once here, so the prompt, the scorer and the cache all read the same sentences.
    return [passage_defused(p) for p in await passages_linked(passages)]


async def tier_prompt(
    *, tier: ModelTier, passages: Sequence[Passage], turns: list[dict[str, str]], question: str
) -> TierPrompt:
    """This tier's prompt: the passages that fit its window, in a stable order, then history.

    Counted with the tier's own tokenizer: every text is counted once by its llama.cpp server
    (remembered afterwards), so the window is filled, not guessed at.
    """
    counter = tier.token_counter()
    candidates = passages[
        : count_for(tier.name, settings.PROMPT_MAX_PASSAGES, knob="PROMPT_MAX_PASSAGES")
    ]
    await counter.prime(
        [
            question,
            instructions(),
            *(passage_line(n, p) for n, p in enumerate(candidates, start=1)),
            *(t["content"] for t in turns),
        ]
    )
    budget = (
        tier.context_window
        - tier.max_answer_tokens
        - counter.count(question)
        - settings.PROMPT_MARGIN_TOKENS
        # Leave room for some history: it is trimmed to what is left.
        - tier.context_window // 8
    )
    fitted = passages_fit(passages=candidates, budget_tokens=budget, count=counter.count)
    fitted = passages_ordered(fitted, tier=tier.name)
    system = system_prompt()
    # The passages are quoted in the customer's turn: history gets what they and instructions leave.
    asked = question_message(passages=fitted, question=question)
    await counter.prime([system, asked])
    history = history_for_tier(
        turns=turns, tier=tier, system_prompt=system, question=asked, count=counter.count
    )
    messages = build_messages(passages=fitted, history=history, question=question)
    prompt_tokens = sum(counter.count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return TierPrompt(tier=tier, passages=fitted, messages=messages, prompt_tokens=prompt_tokens)


def answer_baseline_cost(
    *,
    result: CascadeResult,
    baseline: ModelTier,
    shown: Mapping[str, tuple[tuple[int, ...], int]] | None = None,
) -> tuple[Decimal, bool]:
    """What the baseline tier alone would have paid for this answer, and whether it was measured.

    Its own answer call when it ran to the end (measured); else an estimate at its prices with
    the answer length of the last answer call that ran, and that call's prompt tokens when the
    baseline's prompt quotes the same passages, or else the baseline's own prompt as counted by
    its tokenizer (`shown`: each tier's quoted chunks and prompt tokens; tiers may quote
    different numbers of passages). Support checks are never part of it: the baseline alone is
    never checked.
    """
    for attempt in result.attempts:
        if attempt.tier == baseline.name and attempt.score is not None and not attempt.estimated:
            return attempt.call_cost, True
    ran = [a for a in result.attempts if a.tokens_in]
    if not ran:
        return Decimal("0"), False
    last, shown = ran[-1], shown or {}
    tokens_in = last.tokens_in
    own, answering = shown.get(baseline.name), shown.get(last.tier)
    if own is not None and answering is not None and own[0] != answering[0]:
        tokens_in = own[1]
    return baseline.cost(tokens_in, last.tokens_out), False


def avoided_baseline_cost(*, baseline: ModelTier) -> Decimal:
    """What the baseline tier's answer call typically costs: what a cache hit or a decline avoided."""
    return baseline.cost(*expected_call_tokens())


# --- The entry point --------------------------------------------------------------------------

BUDGET_REFUSAL_TEXT = (
    "We have reached today's limit for answers. Please try again tomorrow, "
    "or contact our support team and a person will help."
)


async def answer_question(
    *,
    conversation: Conversation,
    user_message: Message,
    control: RunControl | None = None,
    options: AnswerOptions | None = None,
) -> AsyncIterator[Event]:
    """Yield protocol events for one answer; the assistant message is stored however this ends."""
    control = control or RunControl()
    options = options or AnswerOptions()
    question = user_message.content
    # Every database step before the answer's first words runs again on a fresh connection
    # after a dropped one (a restart): the customer waits a moment instead of losing the answer.
    enabled, message = await db_retrying(
        lambda: sync_to_async(_answer_begin)(
            conversation=conversation, question=question, origin=options.origin
        )
    )
    # The baseline is the dearest usable tier of all, not only those from the starting tier.
    answer = control.answer = Answer(
        message=message, baseline_pool=enabled, new_conversation=options.new_conversation
    )
    finished = False
    try:
        # Read once: the follow-up rewrite and every tier's prompt use these turns.
        turns = (
            options.history[-settings.CHAT_HISTORY_MAX_TURNS :]
            if options.history is not None
            else []
            if options.new_conversation
            else await db_retrying(
                lambda: conversation_turns(
                    conversation_id=conversation.id, before_id=user_message.id
                )
            )
        )
        # A question that steers the assistant (reveal its instructions, show other customers'
        # chats, say what it dictates) is declined before any model reads it, the rewrite's too.
        attack = question_attack(question)
        # A follow-up becomes a complete question before the cache and retrieval.
        answer.rewrite = (
            Rewrite(question=question)
            if attack
            else await question_rewrite(question=question, history=turns)
        )
        question = answer.rewrite.question
        attack = attack or question_attack(question)
        message.standalone_question = question
        message.language = await adetect_language(question)
        declined = abstain_text(message.language, ABSTAIN_TEXT)
        # The answer cache, before retrieval (answer.start says whether it hit). Not for
        # evaluations (fixed tiers): they measure the models, not the cache. Nor for a language
        # the cache's guard cannot read (or none detected): a hit there would be a guess.
        use_cache = options.tiers is None and cache_supports(message.language)
        if use_cache:
            lookup = await db_retrying(
                lambda: answer_cache.cache_lookup(
                    question=question, message_id=message.id, session=conversation.session_key
                )
            )
        elif options.tiers is not None:
            lookup = answer_cache.CacheLookup(bypass_reason="evaluation")
        else:
            # The question's vector all the same: the router and retrieval use it.
            vector = (await get_embedder().aembed([question]))[0].tolist()
            lookup = answer_cache.CacheLookup(bypass_reason="language", vector=vector)
        metrics.cache_lookup_observe(
            hit=lookup.hit is not None, bypassed=bool(lookup.bypass_reason)
        )
        # An attack is never answered from the cache either.
        offered = lookup.hit if not attack else None
        # Chosen here, with the question's vector (the router learns per cluster of questions).
        tiers, answer.route = await db_retrying(
            lambda: cascade_tiers(
                options=options, enabled=enabled, vector=lookup.vector, cached=offered is not None
            )
        )
        if options.tiers is not None:
            answer.baseline_pool = tiers
        hit = offered if tiers else None
        yield {
            "type": "answer.start",
            "message_id": message.id,
            "conversation_id": str(conversation.id),
            # A hit's is the tier that first gave the answer (as answer.end says).
            "tier": hit.tier if hit else tiers[0].name if tiers else None,
            "cached": hit is not None,
            "cache_similarity": hit.similarity if hit else None,
        }
        passages = (
            []
            if hit or attack
            else await db_retrying(lambda: retrieve(question=question, vector=lookup.vector))
        )
        answer.top_similarity = max((p.similarity for p in passages), default=0.0)
        relevance = [p.relevance for p in passages if p.relevance is not None]
        answer.top_relevance = max(relevance) if relevance else None
        # Only a miss is held to the floors: a hit's answer is streamed without them.
        floor, rerank_floor = await db_retrying(arelevance_floors) if hit is None else (0.0, 0.0)
        if hit is not None:
            message.cached, message.cache_similarity = True, hit.similarity
            message.tier = hit.tier  # the tier that first produced the answer
            answer.text, answer.sources = hit.answer, hit.sources
            if options.max_answer_tokens is not None:
                # cl100k tokens: a cached answer is no longer any one tier's tokens.
                answer.text = cl100k_truncate(hit.answer, options.max_answer_tokens)
                answer.cut = answer.text != hit.answer
            yield {"type": "answer.delta", "text": answer.text}
        elif not tiers:
            answer.result.error_code = "no_tier"
            yield {"type": "error", "code": "no_tier", "message": "No model tier is enabled."}
        elif attack or below_floor(
            top_similarity=answer.top_similarity,
            floor=floor,
            top_relevance=answer.top_relevance,
            rerank_floor=rerank_floor,
        ):
            # An attack, or nothing in the knowledge is about this: decline before any model runs.
            answer.result.text, answer.result.abstained = declined, True
            answer.result.abstain_reason = "instruction" if attack else "no_passages"
            answer.text = declined
            yield {"type": "answer.delta", "text": declined}
        else:
            # Each tier's counter asks its own server: all tiers at once.
            prompts = list(
                await asyncio.gather(
                    *(
                        tier_prompt(
                            tier=t,
                            passages=passages,
                            turns=turns,
                            # The answer in the customer's language: said after the question,
                            # so the instructions and passages stay a shared, cached prefix.
                            question="\n\n".join(
                                filter(None, [question, answer_instruction(message.language)])
                            ),
                        )
                        for t in tiers
                    )
                )
            )
            answer.shown = {
                p.tier.name: (tuple(x.chunk_id for x in p.passages), p.prompt_tokens)
                for p in prompts
            }
            check = await db_retrying(support_check)
            if options.origin == Message.Origin.CUSTOMER and options.tiers is None:
                chain = [
                    (p.tier.name, p.max_cost(check, options.max_answer_tokens)) for p in prompts
                ]
                allowed = await db_retrying(
                    lambda: sync_to_async(budget_reserve)(
                        message_id=message.id, chain=chain, key_cap=options.key_cap
                    )
                )
                answer.reserved = True
                prompts = prompts[:allowed]
            if not prompts:
                answer.result.error_code = "budget"
                answer.text = BUDGET_REFUSAL_TEXT
                yield {"type": "answer.delta", "text": BUDGET_REFUSAL_TEXT}
            else:
                async with aclosing(
                    _cascade_events(
                        answer=answer,
                        prompts=prompts,
                        question=question,
                        options=options,
                        check=check,
                        abstain=declined,
                    )
                ) as events:
                    async for event in events:
                        yield event
        accepted = answer.result.accepted
        if accepted and options.max_answer_tokens is not None:
            answer.cut = accepted.tokens_out >= options.max_answer_tokens
        finished = True
        status = _final_status(answer)
        try:
            totals = await _store(answer, status=status, totals=True)
        except Exception:
            finished = False  # not saved as it ended: the finally tries once more, as a failure
            raise
        if (
            use_cache
            and hit is None
            and status == Message.Status.COMPLETE
            and accepted
            and not answer.cut
        ):
            # Only accepted, grounded answers, and only when safe to share.
            if answer.sources:
                await answer_cache.cache_store(
                    question=question,
                    answer=answer.text,
                    sources=answer.sources,
                    tier=accepted.tier,
                    session=conversation.session_key,
                    score=accepted.score,
                    check_yes=accepted.signals.get("check_yes"),
                    cost=answer.result.cost,
                    vector=lookup.vector,
                    history_used=bool(turns),
                )
        yield _end_event(answer, totals=totals)
    finally:
        if not finished:
            # Stopped, disconnected or failed: keep what was streamed and paid, marked as such.
            cancelled = sys.exc_info()[0] in (asyncio.CancelledError, GeneratorExit)
            reason = control.cancel_reason or (
                Message.Status.INTERRUPTED if cancelled else Message.Status.ERROR
            )
            if reason == Message.Status.ERROR and not answer.result.error_code:
                answer.result.error_code = "internal"  # an unexpected exception, not the model
            await _store(answer, status=reason)


def _answer_begin(
    *, conversation: Conversation, question: str, origin: str
) -> tuple[list[ModelTier], Message]:
    """The enabled tiers and the new (streaming) assistant message in one trip to the database
    thread: every answer, every cache hit included, starts with both."""
    enabled = tiers_enabled()
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
        standalone_question=question,
        origin=origin,
    )
    return enabled, message


def _capped(tier: CascadeTier, max_answer_tokens: int | None) -> CascadeTier:
    """The tier with its answer held to the caller's cap, when that is the lower."""
    if max_answer_tokens is None or max_answer_tokens >= tier.max_answer_tokens:
        return tier
    return replace(tier, max_answer_tokens=max_answer_tokens)


async def _cascade_events(
    *,
    answer: Answer,
    prompts: list[TierPrompt],
    question: str,
    options: AnswerOptions,
    check: SupportCheck | None,
    abstain: str = ABSTAIN_TEXT,
) -> AsyncIterator[Event]:
    shown_sources = {p.tier.name: p.sources() for p in prompts}
    try:
        async for event in cascade_run(
            tiers=[_capped(p.cascade_tier(), options.max_answer_tokens) for p in prompts],
            question=question,
            abstain_text=abstain,
            weights=await scorer_weights(),
            stream_mode=options.stream_mode or settings.CASCADE_STREAM_MODE,  # type: ignore[arg-type]
            accept_last=options.accept_last,
            support_check=check,
            deadline=asyncio.get_running_loop().time() + settings.CASCADE_DEADLINE_SECONDS,
            result=answer.result,
        ):
            if event.kind == "delta":
                answer.text += event.text
                yield {"type": "answer.delta", "text": event.text}
            elif event.kind == "escalate":
                answer.text = ""
                yield {
                    "type": "answer.escalate",
                    "from_tier": event.from_tier,
                    "to_tier": event.to_tier,
                    "reason": event.reason,
                }
            elif event.kind == "done" and event.result is not None:
                result = event.result
                # An "I don't know" cites nothing; citations [n] refer to the answering tier's
                # prompt.
                answer.sources = shown_sources.get(result.tier or "", []) if result.accepted else []
                if result.error_code and not result.abstained and not result.interrupted:
                    yield {
                        "type": "error",
                        "code": f"provider_{result.error_code}",
                        "message": "The model could not answer; please try again.",
                    }
                elif result.interrupted:
                    answer.sources = []
                    yield {
                        "type": "error",
                        "code": f"provider_{result.error_code}",
                        "message": "The answer broke off; please ask again.",
                    }
    finally:
        # The servers that read a prompt now hold it in their prompt cache: the next question's
        # passages are quoted to start the same way where they can (PROMPT_PASSAGE_ORDER=reuse).
        called = {a.tier for a in answer.result.attempts if not a.outcome.startswith("skipped")}
        for prompt in prompts:
            if prompt.tier.name in called:
                prompt_sent(prompt.tier.name, prompt.passages)


_TOTALLED = ("cost", "cost_if_largest", "tokens_in", "tokens_out")


def _conversation_totals_sync(conversation_id: Any) -> dict[str, Any]:
    totals = Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).aggregate(answers=Count("id"), **{name: Sum(name) for name in _TOTALLED})
    return _totals_shown(totals)


def _answer_totals(message: Message) -> dict[str, Any]:
    """The totals of a conversation whose only answer is `message`, as the aggregate gives them."""
    totals: dict[str, Any] = {"answers": 1}
    for name in _TOTALLED:
        value = getattr(message, name)
        places = getattr(Message._meta.get_field(name), "decimal_places", None)
        if value is not None and places is not None:
            # As the column stores it: PostgreSQL's numeric rounds half away from zero.
            value = Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        totals[name] = value
    return _totals_shown(totals)


def _totals_shown(totals: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, Decimal) else (v or 0) for k, v in totals.items()}


def _final_status(answer: Answer) -> str:
    result = answer.result
    if result.error_code == "budget":
        return Message.Status.COMPLETE
    if result.error_code and not result.abstained:
        return Message.Status.INTERRUPTED if result.interrupted else Message.Status.ERROR
    return Message.Status.COMPLETE


def _books(answer: Answer) -> None:
    """Cost, the baseline and what was avoided, on the message (nothing paid goes missing)."""
    message, result = answer.message, answer.result
    rewrite = answer.rewrite if answer.rewrite is not None and answer.rewrite.tier else None
    # Tokens and cost are everything paid: every attempt (stopped or failed ones included),
    # their support checks and the follow-up rewrite.
    rewrite_cost = rewrite.cost if rewrite else Decimal("0")
    message.tokens_in = result.tokens_in + (rewrite.tokens_in if rewrite else 0)
    message.tokens_out = result.tokens_out + (rewrite.tokens_out if rewrite else 0)
    message.cost = result.cost + rewrite_cost
    message.cost_estimated = result.estimated or bool(rewrite and rewrite.estimated)
    message.rewrite = rewrite.as_dict() if rewrite else None
    baseline = baseline_tier(answer.baseline_pool)
    message.baseline_tier = baseline.name if baseline else ""
    message.baseline_measured = False
    if baseline is None:
        message.cost_if_largest = Decimal("0")
    elif result.attempts:
        cost, measured = answer_baseline_cost(result=result, baseline=baseline, shown=answer.shown)
        # The rewrite would have been paid by the baseline alone as well.
        message.cost_if_largest = cost + rewrite_cost
        message.baseline_measured = measured
    elif message.cached or result.abstain_reason == "no_passages":
        message.cost_if_largest = avoided_baseline_cost(baseline=baseline) + rewrite_cost
    else:
        message.cost_if_largest = message.cost


async def _store(answer: Answer, *, status: str, totals: bool = False) -> dict[str, Any] | None:
    """Save the answer and settle its budget reservation; with totals=True also return the
    conversation's totals (one thread hop)."""
    message, result = answer.message, answer.result
    message.content = answer.text
    message.status = status
    message.sources = answer.sources
    # No tier when no model answered (a decline, a failure before any answer); a hit keeps its.
    if not message.cached:
        message.tier = result.tier or ""
    message.attempts = [a.as_dict() for a in result.attempts]
    message.abstained = result.abstained
    message.abstain_reason = result.abstain_reason
    message.error_code = result.error_code
    message.ttft_ms = result.ttft_ms
    message.total_ms = (time.perf_counter() - answer.started) * 1000
    return await db_retrying(lambda: sync_to_async(_save_and_total)(answer, totals))


# A restarting PostgreSQL is back within a few seconds: a step that met a dropped connection
# runs again on a fresh one rather than losing the customer's answer (about 4 s of pauses).
DB_RETRY_PAUSES = (0.25, 0.5, 1.0, 2.0)


async def db_retrying(step: Callable[[], Awaitable[T]]) -> T:
    """Run an idempotent database step, again on a fresh connection after a dropped one. The
    close runs on the thread that held the broken connection (thread-sensitive, as the ORM)."""
    for pause in DB_RETRY_PAUSES:
        try:
            return await step()
        except (OperationalError, InterfaceError):
            await sync_to_async(close_old_connections)()
            await asyncio.sleep(pause)
    return await step()


def _save_and_total(answer: Answer, totals: bool) -> dict[str, Any] | None:
    message = answer.message
    _books(answer)
    if answer.reserved:
        # The answer and its budget settled together, or neither.
        with transaction.atomic():
            message.save()
            budget_settle(message_id=message.id)
    else:
        # One statement (a cache hit, a decline): no BEGIN and COMMIT, two trips fewer.
        message.save()
    metrics.answer_observe(message=message, result=answer.result, rewrite=answer.rewrite)
    if answer.route is not None and message.origin == Message.Origin.CUSTOMER:
        _route_observe(answer)
    if not totals:
        return None
    if answer.new_conversation:
        return _answer_totals(message)
    return _conversation_totals_sync(message.conversation_id)


def _route_observe(answer: Answer) -> None:
    """Record a customer's answer for the router (it learns when it chose the start); only a
    complete answer says how good the start was. A failure is logged: the answer stands."""
    message = answer.message
    if answer.route is None or message.status != Message.Status.COMPLETE or answer.cut:
        return
    try:
        route_observe(
            message_id=message.id,
            route=answer.route,
            question=message.standalone_question,
            attempts=message.attempts,
            abstained=message.abstained,
            tiers=[t.name for t in answer.baseline_pool],
        )
    except Exception:
        logger.exception("the router could not learn from answer %s", message.id)


def _end_event(answer: Answer, *, totals: dict[str, Any] | None) -> Event:
    message, result = answer.message, answer.result
    return {
        "type": "answer.end",
        "message_id": message.id,
        "status": message.status,
        "tier": message.tier or None,
        "cached": message.cached,
        "cache_similarity": message.cache_similarity,
        "sources": answer.sources,
        "usage": {"tokens_in": message.tokens_in, "tokens_out": message.tokens_out},
        "cost": float(message.cost),
        "cost_estimated": message.cost_estimated,
        "cost_if_largest": float(message.cost_if_largest),
        "baseline": {"tier": message.baseline_tier, "measured": message.baseline_measured},
        "attempts": message.attempts,
        "abstained": message.abstained,
        "abstain_reason": result.abstain_reason,
        "cut": answer.cut,
        "error_code": message.error_code,
        "standalone_question": message.standalone_question,
        "rewrite": message.rewrite,
        "latency_ms": {"ttft": message.ttft_ms, "total": message.total_ms},
        "conversation_totals": totals,
    }
