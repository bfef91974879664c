"""One provider for every tier: the openai package's AsyncOpenAI, streaming."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2
import openai
from openai._base_client import AsyncHttpxClientWrapper

logger = logging.getLogger(__name__)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context every model client of this process shares.

    An HTTP client left to build its own reads the whole CA bundle, about 40 ms of CPU, and
    a client is made for each model call, on the event loop. Built the same way, once.
    """
    return httpx2.create_ssl_context()


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
    # A 429's Retry-After is waited out when it asks for at most this many seconds in all
    # (None: TIER_RETRY_AFTER_MAX_SECONDS); longer, or no Retry-After: the next tier answers.
    retry_after_max_seconds: float | None = None


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds a 429 asks the caller to wait (retry-after-ms, or Retry-After as seconds or an
    HTTP date); None when it does not say or says nonsense."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        value = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, value)
    return value if math.isfinite(value) and value >= 0 else None


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
        cap = config.retry_after_max_seconds
        if cap is None:
            from django.conf import settings

            cap = settings.TIER_RETRY_AFTER_MAX_SECONDS
        self.retry_after_max = float(cap)
        timeout = openai.Timeout(config.timeout_seconds, connect=min(5.0, config.timeout_seconds))
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=timeout,
            max_retries=config.max_retries,
            # openai's own client class (closed when collected, its default limits), given the
            # shared TLS context instead of building one.
            http_client=AsyncHttpxClientWrapper(
                timeout=timeout, follow_redirects=True, verify=_tls_context()
            ),
        )

    async def stream(
        self, *, messages: list[dict[str, str]], max_tokens: int, generation: Generation
    ) -> AsyncIterator[str]:
        """Yield text deltas as they arrive; usage and log-probabilities land in generation."""
        started = time.perf_counter()
        extra: dict[str, Any] = (
            {"logprobs": True, "top_logprobs": 5} if self.supports_logprobs else {}
        )
        response = await self._create(messages=messages, max_tokens=max_tokens, extra=extra)
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
            # Transport errors mid-stream (a chunked body cut short, a reset) surface as
            # APIConnectionError in openai 3.x; a truncated SSE event as ValueError/JSON errors.
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

    async def _create(
        self, *, messages: list[dict[str, str]], max_tokens: int, extra: dict[str, Any]
    ) -> Any:
        """Open the stream. A 429 that asks for a wait within the cap (in all) is waited out and
        asked again; any other refusal is a ProviderError, so the cascade tries the next tier."""
        waited = 0.0
        while True:
            try:
                return await self._open(messages=messages, max_tokens=max_tokens, extra=extra)
            except openai.APIStatusError as exc:
                if exc.status_code != 429:
                    raise ProviderError(
                        "http", f"{self.config.name} answered HTTP {exc.status_code}"
                    ) from exc
                wait = retry_after_seconds(exc.response.headers)
                if wait is None or waited + wait > self.retry_after_max:
                    said = "no Retry-After" if wait is None else f"Retry-After {wait:g} s"
                    raise ProviderError(
                        "rate_limited", f"{self.config.name} is rate limited ({said})"
                    ) from exc
                logger.info("%s rate limited: waiting %.1f s as asked", self.config.name, wait)
                await asyncio.sleep(wait)
                waited += wait

    async def _open(
        self, *, messages: list[dict[str, str]], max_tokens: int, extra: dict[str, Any]
    ) -> Any:
        try:
            return await self._client.chat.completions.create(
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
