"""Chat reads: a session's conversations and their messages, as plain data for pages and the API."""

from __future__ import annotations

from typing import Any

from chatbot.models import Conversation, Message


def conversation_list(*, session_key: str, limit: int = 50) -> list[dict[str, Any]]:
    """The session's conversations, most recently active first."""
    rows = Conversation.objects.filter(session_key=session_key).order_by("-updated_at")[:limit]
    return [
        {"id": str(c.id), "title": c.title or "New conversation", "updated_at": c.updated_at}
        for c in rows
    ]


def message_data(message: Message) -> dict[str, Any]:
    """One message as the browser renders it (content is raw text; the page sanitises markdown)."""
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "client_id": message.client_id,
        "standalone_question": message.standalone_question,
        "rewrite": message.rewrite,
        "tier": message.tier,
        "attempts": message.attempts,
        "cached": message.cached,
        "sources": message.sources,
        "usage": {"tokens_in": message.tokens_in, "tokens_out": message.tokens_out},
        "cost": float(message.cost),
        "cost_if_largest": float(message.cost_if_largest),
        "abstained": message.abstained,
        "feedback": message.feedback,
        "error_code": message.error_code,
        "created_at": message.created_at,
    }


def conversation_detail(*, session_key: str, conversation_id: Any) -> dict[str, Any] | None:
    """A conversation of this session with all its messages, or None if it is not the session's."""
    conversation = Conversation.objects.filter(id=conversation_id, session_key=session_key).first()
    if conversation is None:
        return None
    return {
        "id": str(conversation.id),
        "title": conversation.title or "New conversation",
        "messages": [message_data(m) for m in conversation.messages.order_by("id")],
    }
