"""The session's conversations over HTTP: the side list, a reopened conversation, nobody else's."""

from __future__ import annotations

import pytest
from django.test import Client

from chatbot.models import Conversation, Message

pytestmark = [pytest.mark.django_db]


def _browser() -> tuple[Client, str]:
    client = Client()
    assert client.get("/").status_code == 200  # the chat page gives the browser a session
    return client, client.session.session_key


def test_side_list_and_reopen_show_only_this_browsers_conversations() -> None:
    client, session = _browser()
    stranger, stranger_session = _browser()
    mine = Conversation.objects.create(session_key=session, title="Returns")
    Message.objects.create(conversation=mine, role="user", content="How do returns work?")
    answer = Message.objects.create(
        conversation=mine,
        role="assistant",
        content="Within 30 days [1].",
        status="stopped",
        standalone_question="How do returns work?",
        tier="small",
        sources=[{"n": 1, "chunk_id": 3, "title": "Returns policy"}],
        feedback=1,
    )
    theirs = Conversation.objects.create(session_key=stranger_session, title="Secret")

    listed = client.get("/api/conversations/").json()["conversations"]
    assert [c["id"] for c in listed] == [str(mine.id)]

    detail = client.get(f"/api/conversations/{mine.id}/").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    shown = detail["messages"][1]
    assert shown["id"] == answer.id
    assert shown["status"] == "stopped"
    assert shown["standalone_question"] == "How do returns work?"
    assert shown["sources"][0]["title"] == "Returns policy"
    assert shown["feedback"] == 1

    assert client.get(f"/api/conversations/{theirs.id}/").status_code == 404
    assert stranger.get(f"/api/conversations/{mine.id}/").status_code == 404
    assert client.get("/api/conversations/not-a-uuid/").status_code == 404
