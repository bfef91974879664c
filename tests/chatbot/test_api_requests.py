"""What the API refuses and how: OpenAI's error shape, a field named, nothing stored."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from chatbot.api_keys import api_key_create
from chatbot.models import Message

pytestmark = [pytest.mark.django_db(transaction=True)]

USER = {"role": "user", "content": "Where is my parcel?"}


@pytest.fixture
async def key() -> str:
    return (await sync_to_async(api_key_create)(name="requests", rate_limit_per_minute=1000)).key


async def _post(key: str, body: object, *, raw: bytes | None = None):  # noqa: ANN202
    return await AsyncClient().post(
        "/v1/chat/completions",
        data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER]}, "model"),
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto", "messages": [USER, {"role": "assistant", "content": "Hi"}]}, "messages"),
        ({"model": "auto", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {
                "model": "auto",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content",
        ),
        (
            {"model": "auto", "messages": [{"role": "user", "content": "a\x00b"}]},
            "messages[0].content",
        ),
        (
            {"model": "auto", "messages": [{"role": "user", "content": "x" * 4001}]},
            "messages[0].content",
        ),
        ({"model": "auto", "messages": [USER], "n": 3}, "n"),
        ({"model": "auto", "messages": [USER], "stream": "yes"}, "stream"),
        ({"model": "auto", "messages": ["hello"]}, "messages[0]"),
        ({"model": "auto", "messages": [USER], "max_tokens": 0}, "max_tokens"),
        ({"model": "auto", "messages": [USER], "max_tokens": True}, "max_tokens"),
        ({"model": "auto", "messages": [USER], "max_tokens": 2.5}, "max_tokens"),
        (
            {"model": "auto", "messages": [USER], "max_completion_tokens": "9"},
            "max_completion_tokens",
        ),
    ],
)
async def test_a_request_that_cannot_be_answered_gets_400_naming_the_field(
    key, body, param
) -> None:  # noqa: ANN001
    response = await _post(key, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
    assert not await Message.objects.aexists()


async def test_bodies_that_are_not_json_objects_get_400(key) -> None:  # noqa: ANN001
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000):
        response = await _post(key, None, raw=raw)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_wrong_methods_and_no_csrf_token_needed(key) -> None:  # noqa: ANN001
    client = AsyncClient(enforce_csrf_checks=True)
    response = await client.get("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 405 and response["Allow"] == "POST"
    # A bearer key, no cookie or CSRF token: the CSRF middleware lets it through to the checks.
    response = await client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "auto", "messages": []}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 400


async def test_text_parts_and_system_messages_are_accepted_as_openai_sends_them(key) -> None:  # noqa: ANN001
    body = {
        "model": "no-such-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Where is my parcel?"}]},
        ],
    }
    # Valid as a request: only the model is unknown (404 comes after the request was read).
    response = await _post(key, body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_max_tokens_and_its_newer_name_cap_the_answer_the_lower_holding() -> None:
    from chatbot.api import completion_request_parse

    def cap(**fields: object) -> int | None:
        body = {"model": "auto", "messages": [USER], **fields}
        return completion_request_parse(json.dumps(body).encode()).max_tokens

    assert cap() is None and cap(max_tokens=None) is None
    assert cap(max_tokens=40) == 40 and cap(max_completion_tokens=12) == 12
    assert cap(max_tokens=40, max_completion_tokens=12) == 12
