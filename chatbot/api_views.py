"""The OpenAI-compatible HTTP API: `POST /v1/chat/completions` and `GET /v1/models`.

Async views under Daphne. A streamed answer is a `StreamingHttpResponse` over an async
iterator: Django's ASGI handler sends each chunk as it comes, and when the client goes away
it cancels the iteration, which stops the answer (the pipeline stores it as interrupted).
Clients authenticate with `Authorization: Bearer <key>` (chatbot/api_keys.py), never with a
cookie, so the views are CSRF-exempt: a browser cannot be made to send a bearer key.
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chatbot.api import (
    ApiError,
    Completion,
    answer_options,
    completion_collect,
    completion_events,
    completion_request_parse,
    completion_stream,
    model_not_found,
    models_list,
)
from chatbot.api_keys import api_key_cap_reached, api_key_find, api_key_rate_allow
from chatbot.models import ApiKey

logger = logging.getLogger(__name__)


def error_response(error: ApiError) -> JsonResponse:
    """OpenAI's error shape with its status."""
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


async def _authenticate(request: HttpRequest) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    key = await api_key_find(presented=presented.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise ApiError(
            401, "Incorrect API key provided (or it was revoked).", code="invalid_api_key"
        )
    return key


def _method_not_allowed(allowed: str) -> ApiError:
    return ApiError(
        405,
        f"Use {allowed} on this endpoint.",
        code="method_not_allowed",
        headers={"Allow": allowed},
    )


@csrf_exempt
async def models_view(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: `auto` and every tier a client may name."""
    try:
        if request.method != "GET":
            raise _method_not_allowed("GET")
        await _authenticate(request)
        return JsonResponse({"object": "list", "data": await models_list()})
    except ApiError as error:
        return error_response(error)


@csrf_exempt
async def model_view(request: HttpRequest, model: str) -> HttpResponse:
    """GET /v1/models/<model>: one model, or OpenAI's 404."""
    try:
        if request.method != "GET":
            raise _method_not_allowed("GET")
        await _authenticate(request)
        for entry in await models_list():
            if entry["id"] == model:
                return JsonResponse(entry)
        raise model_not_found(model)
    except ApiError as error:
        return error_response(error)


@csrf_exempt
async def chat_completions_view(request: HttpRequest) -> HttpResponse:
    """POST /v1/chat/completions: a grounded answer, whole or as server-sent events."""
    try:
        if request.method != "POST":
            raise _method_not_allowed("POST")
        api_key = await _authenticate(request)
        if not await api_key_rate_allow(api_key=api_key):
            raise ApiError(
                429,
                f"Rate limit reached: {api_key.rate_limit_per_minute} requests a minute "
                "for this key.",
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": "10"},
            )
        try:
            body = request.body
        except RequestDataTooBig:
            raise ApiError(
                413, "The request body is too large.", code="request_too_large"
            ) from None
        parsed = completion_request_parse(body)
        options = await answer_options(model=parsed.model, api_key=api_key, stream=parsed.stream)
        if await api_key_cap_reached(api_key=api_key):
            raise ApiError(
                429,
                "This key's daily spending cap has been reached; it resets at midnight.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        events = completion_events(api_key=api_key, request=parsed, options=options)
        completion = Completion(model=parsed.model)
        if not parsed.stream:
            try:
                return JsonResponse(await completion_collect(events=events, completion=completion))
            finally:
                await events.aclose()
        # The first event (answer.start) is awaited here, so a refusal before the answer
        # began (no free slot) is still a plain HTTP error, not an event in a 200 stream.
        first = await anext(events)
        response = StreamingHttpResponse(
            completion_stream(
                first=first,
                events=events,
                completion=completion,
                include_usage=parsed.include_usage,
            ),
            content_type="text/event-stream",
        )
        # Proxies and browsers must pass each event on at once, not buffer or store them.
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    except ApiError as error:
        return error_response(error)
    except Exception:
        # The answer is stored as failed; the client gets OpenAI's shape, the log the traceback.
        logger.exception("chat completion failed")
        return error_response(
            ApiError(500, "The answer failed; please retry.", type="server_error", code="internal")
        )
