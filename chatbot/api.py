"""The OpenAI-compatible API's service layer: parse a request, run it through the pipeline,
shape what the pipeline says as OpenAI's objects (a completion, or its chunks).

Nothing here answers: `answer_question` does, exactly as for the chat socket. The API adds
what OpenAI's protocol needs around it: the model name picks the policy (`auto`: the
product's own router and cascade; a tier's name: that tier alone), the request's `messages`
are the history (fitted to each tier's window by the pipeline, as in the chat), `max_tokens`
caps the answer below each tier's own (finish_reason "length" when it cut it), and every
answer carries `usage` and a `frugal` object (tier, attempts, cost, sources, cached).

A stream cannot take text back, so streamed answers run the cascade buffered: a lower tier's
draft is held until it is accepted, only the last tier streams as it is generated. Should that
last answer then be judged too weak, the decline follows it after a blank line and
`frugal.replaced` says the streamed draft was withdrawn (`message.content` of a non-streamed
answer is only ever the final text).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from chatbot import ratelimit
from chatbot.api_keys import api_key_cap
from chatbot.models import ApiKey, Conversation, Message
from chatbot.pipeline import AnswerOptions, Event, answer_question
from routing.models import ModelTier, tiers_enabled

AUTO_MODEL = "auto"
OWNER = "frugal-chatbot"
# Roles whose text is history; a client's own system prompt is not used: the product's
# grounded prompt is the system prompt (README: "The OpenAI-compatible API").
HISTORY_ROLES = {"user": Message.Role.USER, "assistant": Message.Role.ASSISTANT}
IGNORED_ROLES = {"system", "developer"}
# Tier names are slugs; a longer or odder name cannot be one.
MAX_MODEL_NAME = 100


class ApiError(Exception):
    """An error as OpenAI's API reports it: HTTP status and {"error": {...}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 for a request that cannot be answered as sent."""
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class CompletionRequest:
    """A chat completion request, validated: the question, the turns before it, how to answer."""

    model: str
    question: str
    history: list[dict[str, str]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None  # the answer's cap (max_completion_tokens or max_tokens)


def _text_of(content: Any, *, index: int) -> str | None:
    """A message's text: a string, or the text parts of a content list (None: no content)."""
    param = f"messages[{index}].content"
    if content is None:
        return None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid("Only text content parts are supported.", param=param)
            if not isinstance(part.get("text"), str):
                raise invalid("A text content part needs a string 'text'.", param=param)
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        raise invalid("Message content must be a string or a list of text parts.", param=param)
    if "\x00" in text:
        raise invalid("Text may not contain NUL characters.", param=param)
    return text


def completion_request_parse(body: bytes) -> CompletionRequest:
    """The request in `body` (JSON), validated; ApiError(400) naming the field at fault."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise invalid("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("You must provide a model parameter.", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list.", param="messages")
    n = data.get("n", 1)
    if n not in (None, 1):
        raise invalid("Only n=1 is supported.", param="n")
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean.", param="stream")
    stream_options = data.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("'stream_options' must be an object.", param="stream_options")
    caps = []
    # max_tokens is OpenAI's older name for max_completion_tokens; given both, the lower holds.
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid(f"'{name}' must be a positive integer.", param=name)
        caps.append(value)
    turns: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid("Each message must be an object.", param=f"messages[{index}]")
        role = message.get("role")
        if role in IGNORED_ROLES:
            _text_of(message.get("content"), index=index)  # still validated
            continue
        if role not in HISTORY_ROLES:
            raise invalid(
                f"Unsupported role {str(role)[:40]!r}: use system, user or assistant.",
                param=f"messages[{index}].role",
            )
        text = _text_of(message.get("content"), index=index)
        limit = settings.CHAT_MAX_MESSAGE_CHARS * (1 if role == "user" else 4)
        if text is not None and len(text) > limit:
            raise invalid(
                f"A {role} message is limited to {limit} characters.",
                param=f"messages[{index}].content",
                code="string_above_max_length",
            )
        if text and text.strip():
            turns.append({"role": HISTORY_ROLES[role], "content": text.strip()})
    if not turns or turns[-1]["role"] != Message.Role.USER:
        raise invalid("The last message must be the user's question.", param="messages")
    return CompletionRequest(
        model=model.strip()[:MAX_MODEL_NAME],
        question=turns[-1]["content"],
        history=turns[:-1],
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        max_tokens=min(caps) if caps else None,
    )


async def api_tiers() -> list[ModelTier]:
    """The tiers a client may name: enabled and able to answer now, cheapest first."""
    return [t for t in await sync_to_async(tiers_enabled)() if t.usable]


def model_object(name: str, created: int) -> dict[str, Any]:
    """One entry of GET /v1/models."""
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}


async def models_list() -> list[dict[str, Any]]:
    """`auto` (the product's policy) and every tier a client may pick alone."""
    # A tier row keeps no creation time: `created` is 0 rather than a made-up date.
    return [model_object(AUTO_MODEL, 0)] + [model_object(t.name, 0) for t in await api_tiers()]


def model_not_found(model: str) -> ApiError:
    """OpenAI's 404 for a model name it does not serve."""
    return ApiError(
        404,
        f"The model `{model[:MAX_MODEL_NAME]}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


async def answer_options(*, model: str, api_key: ApiKey, stream: bool) -> AnswerOptions:
    """What the model name asks for, as the pipeline's options; ApiError(404) for an unknown one."""
    options = AnswerOptions(origin=Message.Origin.CUSTOMER, key_cap=api_key_cap(api_key))
    if stream:
        # A stream cannot take a draft back (module docstring).
        options.stream_mode = "buffer"
    if model == AUTO_MODEL:
        return options
    if model not in {t.name for t in await api_tiers()}:
        raise model_not_found(model)
    options.single_tier = model
    return options


def _question_store_sync(*, api_key: ApiKey, question: str) -> tuple[Conversation, Message]:
    with transaction.atomic():
        conversation = Conversation.objects.create(
            # Never a browser's session key (those are 32 lowercase letters and digits).
            session_key=f"api:{api_key.id}",
            channel=Conversation.Channel.API,
            api_key=api_key,
            title=question[:80],
        )
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=question
        )
    return conversation, message


async def completion_events(
    *, api_key: ApiKey, request: CompletionRequest, options: AnswerOptions
) -> AsyncIterator[Event]:
    """The pipeline's events for one request; the question is stored before any model work.

    Takes one of the process's answer slots (the chat's cap) for as long as it runs:
    ApiError(503) when none is free, raised before anything is stored. However it ends
    (finished, client gone, failed), the pipeline stores the answer as such.
    """
    if not ratelimit.generation_take():
        raise ApiError(
            503,
            "We are answering many questions right now; please retry shortly.",
            type="server_error",
            code="overloaded",
            headers={"Retry-After": "2"},
        )
    try:
        conversation, user_message = await sync_to_async(_question_store_sync)(
            api_key=api_key, question=request.question
        )
        options.history = request.history
        options.max_answer_tokens = request.max_tokens
        events = answer_question(
            conversation=conversation, user_message=user_message, options=options
        )
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()
    finally:
        ratelimit.generation_give_back()


# --- OpenAI's objects ---------------------------------------------------------------------------


def usage_object(end: Event) -> dict[str, int]:
    """OpenAI's usage from the pipeline's: every token paid for the answer (every tier tried,
    the follow-up rewrite), so `usage` and `frugal.cost` tell the same story."""
    tokens_in = int(end.get("usage", {}).get("tokens_in") or 0)
    tokens_out = int(end.get("usage", {}).get("tokens_out") or 0)
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def frugal_object(end: Event, *, replaced: bool = False) -> dict[str, Any]:
    """The extension object: how the answer was made and what it cost."""
    return {
        "tier": end.get("tier"),
        "attempts": end.get("attempts") or [],
        "cost": end.get("cost", 0.0),
        "cost_estimated": end.get("cost_estimated", False),
        "cost_if_largest": end.get("cost_if_largest", 0.0),
        "sources": end.get("sources") or [],
        "cached": bool(end.get("cached")),
        "abstained": bool(end.get("abstained")),
        "abstain_reason": end.get("abstain_reason") or "",
        "status": end.get("status"),
        "conversation_id": end.get("conversation_id"),
        "message_id": end.get("message_id"),
        "replaced": replaced,
    }


def finish_reason(end: Event) -> str:
    """OpenAI's finish_reason: "length" when the request's max_tokens cut the answer short."""
    return "length" if end.get("cut") else "stop"


def end_error(end: Event, error: Event | None) -> ApiError | None:
    """The API error an answer that ended badly maps to (None: it is an answer)."""
    code = end.get("error_code") or ""
    if code == "budget":
        return ApiError(
            429,
            "Today's spending limit for answers has been reached; try again tomorrow.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if end.get("status") == Message.Status.COMPLETE:
        return None
    if code == "no_tier":
        return ApiError(503, "No model tier is enabled.", type="server_error", code="no_tier")
    if code == "internal":
        return ApiError(500, "The answer failed; please retry.", type="server_error", code=code)
    message = (error or {}).get("message") or "The model could not answer; please try again."
    return ApiError(502, message, type="server_error", code=(error or {}).get("code") or code)


@dataclass
class Completion:
    """One request's answer as it comes in, shaped as OpenAI's completion or chunks."""

    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    message_id: int | None = None
    conversation_id: str | None = None
    text: str = ""  # what the client was sent
    replaced: bool = False
    error: Event | None = None

    @property
    def id(self) -> str:
        """The completion id (the stored answer's id: the admin finds it)."""
        return f"chatcmpl-{self.message_id}"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """A chat.completion.chunk with one choice."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def on_event(self, event: Event) -> list[dict[str, Any]]:
        """The chunks an event becomes (none for most but the answer's text)."""
        kind = event["type"]
        if kind == "answer.start":
            self.message_id = event["message_id"]
            self.conversation_id = event.get("conversation_id")
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "answer.delta":
            text = event["text"]
            self.text += text
            return [self.chunk({"content": text})] if text else []
        if kind == "answer.escalate" and self.text:
            # Only the last tier streams, so this is its draft being declined: it cannot be
            # taken back, so the decline follows it, marked in `frugal.replaced`.
            self.replaced = True
            self.text += "\n\n"
            return [self.chunk({"content": "\n\n"})]
        if kind == "error":
            self.error = event
        return []

    def final_chunks(self, end: Event, *, include_usage: bool) -> list[dict[str, Any]]:
        """The finishing chunk (with `frugal`), and the usage chunk when the client asked."""
        end = {**end, "conversation_id": self.conversation_id}
        last = self.chunk({}, finish_reason=finish_reason(end))
        last["frugal"] = frugal_object(end, replaced=self.replaced)
        chunks = [last]
        if include_usage:
            usage = self.chunk({})
            usage["choices"] = []
            usage["usage"] = usage_object(end)
            chunks.append(usage)
        return chunks

    def body(self, end: Event, *, final_text: str) -> dict[str, Any]:
        """The whole chat.completion for a request that did not stream."""
        end = {**end, "conversation_id": self.conversation_id}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": final_text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason(end),
                }
            ],
            "usage": usage_object(end),
            "frugal": frugal_object(end),
        }


async def completion_collect(
    *, events: AsyncIterator[Event], completion: Completion
) -> dict[str, Any]:
    """Run a request that does not stream to its end: the completion, or ApiError."""
    final = ""
    end: Event | None = None
    async for event in events:
        completion.on_event(event)
        if event["type"] == "answer.delta":
            final += event["text"]
        elif event["type"] == "answer.escalate":
            final = ""  # the next tier's answer (or the decline) replaces the draft
        elif event["type"] == "answer.end":
            end = event
    if end is None:
        raise ApiError(500, "The answer ended without a result.", type="server_error")
    problem = end_error(end, completion.error)
    if problem is not None:
        raise problem
    return completion.body(end, final_text=final)


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


async def _with_keepalive(
    events: AsyncIterator[Event], every: float
) -> AsyncIterator[Event | None]:
    """The events, and None whenever `every` seconds pass without one (a buffered lower tier
    can be silent for longer than a proxy's read timeout). The next event is awaited as a task
    of its own so a keep-alive never cancels it; leaving cancels it (the answer stops)."""
    pending: asyncio.Future[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))  # type: ignore[arg-type]
            done, _ = await asyncio.wait({pending}, timeout=every if every > 0 else None)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending


async def completion_stream(
    *, first: Event, events: AsyncIterator[Event], completion: Completion, include_usage: bool
) -> AsyncIterator[bytes]:
    """The answer as server-sent events: chunks as text arrives, then `data: [DONE]`. An answer
    that ends badly ends with OpenAI's error object as the last event before [DONE]. A comment
    line every API_STREAM_KEEPALIVE_SECONDS of silence keeps proxies from closing the stream."""
    try:
        for chunk in completion.on_event(first):
            yield sse(chunk)
        async with aclosing(
            _with_keepalive(events, settings.API_STREAM_KEEPALIVE_SECONDS)
        ) as paced:
            async for event in paced:
                if event is None:
                    yield KEEPALIVE
                elif event["type"] == "answer.end":
                    problem = end_error(event, completion.error)
                    if problem is not None:
                        yield sse(problem.body())
                    else:
                        for chunk in completion.final_chunks(event, include_usage=include_usage):
                            yield sse(chunk)
                else:
                    for chunk in completion.on_event(event):
                        yield sse(chunk)
        yield sse("[DONE]")
    finally:
        # Closed here, not left to the garbage collector: a client that went away stops the
        # answer now (the pipeline stores it as interrupted).
        await events.aclose()  # type: ignore[attr-defined]
