"""Chat test helpers: a small help centre of our own, sessions and sockets bound to them."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.core.management import call_command

HELP_CENTRE = {
    "returns.md": (
        "# Returns policy\n\n## Return window\nYou can return most items within 30 days of "
        "delivery. Items must be unused and in their original packaging.\n\n## Refund time\n"
        "Refunds reach your card within 5 to 7 working days after the parcel arrives.\n"
    ),
    "shipping.md": (
        "# Shipping\n\n## Delivery times\nStandard delivery takes 3 to 5 working days. Express "
        "delivery takes 1 working day and costs 6 euros.\n"
    ),
    "gift-cards.md": (
        "# Gift cards\n\n## Balance\nGift cards are valid for two years. Check the balance "
        "with the code <img src=x onerror=alert(1)> printed on the card.\n"
    ),
}


@pytest.fixture(autouse=True)
def _details_shown(settings) -> None:  # noqa: ANN001
    """Most chat tests check an answer's tiers, tokens and costs, which only staff see by default;
    the tests of what customers see turn CHAT_SHOW_DETAILS off again."""
    settings.CHAT_SHOW_DETAILS = True


@pytest.fixture
def help_centre(tmp_path: Path, django_db_blocker) -> Path:  # noqa: ANN001
    """Three short help documents indexed with real embeddings (one holds an HTML injection)."""
    for name, text in HELP_CENTRE.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with django_db_blocker.unblock():
        call_command(
            "load_demo_knowledge", folder=str(tmp_path), verbosity=0, stdout=open(os.devnull, "w")
        )
    return tmp_path


async def new_session() -> str:
    """A saved Django session, as a browser that loaded the chat page would have."""
    from asgiref.sync import sync_to_async
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    await sync_to_async(store.save)()
    return store.session_key


async def chat_socket(session_key: str | None = None) -> WebsocketCommunicator:
    """A connected chat socket carrying the session cookie (like the page's own socket)."""
    from chatbot.asgi import application

    headers = [(b"origin", b"http://127.0.0.1")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def frames_until(
    communicator: WebsocketCommunicator, types: tuple[str, ...], timeout: float = 120
) -> list[dict]:
    """Collect frames up to and including the first whose type is in types."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def slots_free() -> None:
    """Every generation slot is given back. An answer's task returns its slot when it ends,
    which is a moment after the end frame (it still closes its generator and connection)."""
    from chatbot import ratelimit

    for _ in range(100):
        if ratelimit.generations_running() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ratelimit.generations_running()} generation slot(s) never returned")


def llama_timings(tier, messages: list[dict[str, str]]) -> dict:  # noqa: ANN001 - a ModelTier
    """One answer token from the tier's llama.cpp server for these messages: its `timings`
    (prompt_n prefilled, cache_n reused)."""
    body = json.dumps(
        {"model": tier.model, "messages": messages, "max_tokens": 1, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        f"{tier.base_url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["timings"]
