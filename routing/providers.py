"""One provider for every tier: the openai package's AsyncOpenAI, streaming."""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai


def call_price(
    *,
    price_input_per_mtok: Decimal,
    price_output_per_mtok: Decimal,
    tokens_in: int,
    tokens_out: int,
) -> Decimal:
    """Price of one call: prices are USD per million tokens, input and output apart."""
    return (
        Decimal(str(price_input_per_mtok)) * Decimal(tokens_in)
        + Decimal(str(price_output_per_mtok)) * Decimal(tokens_out)
    ) / Decimal(1_000_000)


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def api_key_env_error(name: str, *, allowed: Iterable[str] | None = None) -> str | None:
    """Why a tier may not read its key from the variable `name`, or None when it may.

    A tier sends its key as a Bearer token to its own base URL, so the name is checked against
    TIER_API_KEY_ENV_ALLOWED (shell-style patterns): without it, anyone allowed to edit a tier
    could have DJANGO_SECRET_KEY or DATABASE_URL sent to a host of their choosing.
    """
    if allowed is None:
        from django.conf import settings

        allowed = settings.TIER_API_KEY_ENV_ALLOWED
    patterns = list(allowed)
    if not _ENV_NAME.fullmatch(name):
        return f"{name!r} is not an environment variable name (capitals, digits and _ only)"
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
        return (
            f"{name} is not an allowed key variable; allowed: {', '.join(patterns) or 'none'} "
            "(TIER_API_KEY_ENV_ALLOWED)"
        )
    return None


class ProviderError(Exception):
    """A call to a tier failed; code is stable ('timeout', 'connection', 'http', 'broken_stream', 'missing_key')."""

    def __init__(self, code: str, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.started = started  # True once at least one token reached us


@dataclass
class Generation:
    """What one streamed call produced: text, per-token log-probabilities, usage and timing."""

    text: str = ""
    token_logprobs: list[float] = field(default_factory=list)
    # The first answer token's alternatives (token -> log-probability): hesitation signals.
    first_top_logprobs: dict[str, float] = field(default_factory=dict)
    tokens_in: int | None = None
    tokens_out: int | None = None
    # True once the server accepted the call (response headers arrived): from then on it may
    # have done work worth billing; a call refused, failed with an HTTP error or timed out
    # before that processed nothing and is billed 0.
    responded: bool = False
    finish_reason: str | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None


@dataclass(frozen=True)
class ProviderConfig:
    """Plain data a provider needs: no ORM objects cross into the call."""

    name: str
    base_url: str
    model: str
    api_key: str | None
    timeout_seconds: float = 60.0
    # No silent retries: the cascade falls through to the next tier instead, so a failing tier
    # costs one timeout, not two.
    max_retries: int = 0
    api_key_env: str = ""


class ChatProvider:
    """Interface: stream a chat completion as text deltas, filling a Generation."""

    supports_logprobs: bool = False

    def stream(
        self, *, messages: list[dict[str, str]], max_tokens: int, generation: Generation
    ) -> AsyncIterator[str]:
        raise NotImplementedError("ChatProvider.stream() must be implemented by subclasses")


class OpenAICompatibleProvider(ChatProvider):
    """Any OpenAI-compatible endpoint (llama.cpp server, vLLM, OpenAI, a gateway)."""

    supports_logprobs = True

    def __init__(self, config: ProviderConfig) -> None:
        refused = api_key_env_error(config.api_key_env) if config.api_key_env else None
        if refused:
            raise ProviderError("key_not_allowed", f"Tier {config.name!r}: {refused}.")
        if not config.api_key:
            where = config.api_key_env or "its api_key_env"
            raise ProviderError("missing_key", f"Tier {config.name!r} has no API key: set {where}.")
        self.config = config
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=openai.Timeout(
                config.timeout_seconds, connect=min(5.0, config.timeout_seconds)
            ),
            max_retries=config.max_retries,
        )

    async def stream(
        self, *, messages: list[dict[str, str]], max_tokens: int, generation: Generation
    ) -> AsyncIterator[str]:
        """Yield text deltas as they arrive; usage and log-probabilities land in generation."""
        started = time.perf_counter()
        extra: dict[str, Any] = (
            {"logprobs": True, "top_logprobs": 5} if self.supports_logprobs else {}
        )
        try:
            response = await self._client.chat.completions.create(
                model=self.config.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )
        except openai.APITimeoutError as exc:
            raise ProviderError(
                "timeout", f"{self.config.name} timed out before answering"
            ) from exc
        except openai.APIConnectionError as exc:
            raise ProviderError("connection", f"{self.config.name} is unreachable: {exc}") from exc
        except openai.APIStatusError as exc:
            raise ProviderError(
                "http", f"{self.config.name} answered HTTP {exc.status_code}"
            ) from exc
        generation.responded = True
        try:
            async with response:
                async for chunk in response:
                    if chunk.usage is not None:
                        generation.tokens_in = chunk.usage.prompt_tokens
                        generation.tokens_out = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        if choice.finish_reason:
                            generation.finish_reason = choice.finish_reason
                        if choice.logprobs is not None and choice.logprobs.content:
                            content = choice.logprobs.content
                            if not generation.token_logprobs and content[0].top_logprobs:
                                generation.first_top_logprobs = {
                                    t.token: t.logprob for t in content[0].top_logprobs
                                }
                            generation.token_logprobs.extend(t.logprob for t in content)
                        text = choice.delta.content if choice.delta else None
                        if text:
                            if generation.ttft_ms is None:
                                generation.ttft_ms = (time.perf_counter() - started) * 1000
                            generation.text += text
                            yield text
        except openai.APITimeoutError as exc:
            raise ProviderError(
                "timeout", f"{self.config.name} timed out mid-answer", started=bool(generation.text)
            ) from exc
        except (openai.APIError, ValueError) as exc:
            # httpx errors surface as APIError subclasses; a truncated SSE body as ValueError/JSON errors.
            raise ProviderError(
                "broken_stream",
                f"{self.config.name} stream broke: {exc}",
                started=bool(generation.text),
            ) from exc
        finally:
            generation.total_ms = (time.perf_counter() - started) * 1000
        if generation.finish_reason is None:
            raise ProviderError(
                "broken_stream",
                f"{self.config.name} stream ended without finishing",
                started=bool(generation.text),
            )
