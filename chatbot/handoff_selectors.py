"""Handoff reads: what the customer, the inbox and the transcript show, as plain data."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from chatbot.models import Conversation, Handoff, Message
from chatbot.support_hours import SupportHours, parse_support_hours

OPEN = (Handoff.Status.WAITING, Handoff.Status.JOINED)


class HandoffError(Exception):
    """A handoff action was refused; code is stable ('not_found', 'bad_email', 'taken', ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def support_hours() -> SupportHours | None:
    """The parsed SUPPORT_HOURS setting (None: a person is always there)."""
    return parse_support_hours(settings.SUPPORT_HOURS)


def agent_name(user: Any) -> str:
    """How an agent is named to customers: first name, else user name."""
    if user is None:
        return ""
    return user.first_name or user.get_username()


def status_frame(handoff: Handoff, *, now: Any = None) -> dict[str, Any]:
    """The customer's `handoff.status` frame: state, agent, and when to expect a reply."""
    hours = support_hours()
    now = now or timezone.now()
    open_now = hours is None or hours.is_open(now)
    frame: dict[str, Any] = {
        "type": "handoff.status",
        "status": handoff.status,
        "handoff_id": handoff.id,
        "conversation_id": str(handoff.conversation_id),
        "agent": agent_name(handoff.agent) or None,
        "open_now": open_now,
        "email": bool(handoff.email),
        "hours": hours.spec if hours else "",
        "reply_expected": None,
    }
    if not open_now and hours is not None:
        frame["reply_expected"] = hours.next_opening(now).isoformat()
    return frame


def inbox_row(handoff: Handoff) -> dict[str, Any]:
    """One line of the agents' inbox."""
    conversation = handoff.conversation
    return {
        "id": handoff.id,
        "status": handoff.status,
        "reason": handoff.reason,
        "question": handoff.question or conversation.title,
        "email": handoff.email,
        "agent": agent_name(handoff.agent) or None,
        "agent_id": handoff.agent_id,
        "site": conversation.site.name if conversation.site_id else "",
        "outside_hours": handoff.outside_hours,
        "created_at": handoff.created_at.isoformat(),
        "conversation_id": str(handoff.conversation_id),
    }


def transcript_message(message: Message) -> dict[str, Any]:
    """A message as agents see it: everything, including the bot's attempts."""
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "agent": agent_name(message.agent) if message.agent_id else None,
        "standalone_question": message.standalone_question,
        "tier": message.tier,
        "attempts": message.attempts,
        "sources": message.sources,
        "abstained": message.abstained,
        "feedback": message.feedback,
        "cached": message.cached,
        "created_at": message.created_at.isoformat(),
    }


def handoff_get(handoff_id: Any, *, lock: bool = False) -> Handoff:
    if isinstance(handoff_id, bool) or not isinstance(handoff_id, int):
        raise HandoffError("bad_handoff", "A handoff_id must be a number.")
    rows = Handoff.objects.select_related("agent", "conversation__site")
    if lock:
        rows = rows.select_for_update(of=("self",))
    try:
        return rows.get(id=handoff_id)
    except Handoff.DoesNotExist:
        raise HandoffError("not_found", "No such handoff.") from None


@database_sync_to_async
def inbox_list(*, closed_limit: int = 20) -> list[dict[str, Any]]:
    """Open handoffs (oldest first: they waited longest), then the latest closed ones."""
    rows = Handoff.objects.select_related("agent", "conversation__site")
    open_rows = list(rows.filter(status__in=OPEN).order_by("created_at"))
    closed = list(rows.filter(status=Handoff.Status.CLOSED).order_by("-closed_at")[:closed_limit])
    return [inbox_row(h) for h in open_rows + closed]


@database_sync_to_async
def handoff_detail(*, handoff_id: Any) -> dict[str, Any]:
    """What an agent opens: the handoff, its transcript and the bot's attempts."""
    handoff = handoff_get(handoff_id)
    messages = handoff.conversation.messages.select_related("agent").order_by("id")
    return {
        **inbox_row(handoff),
        "transcript": [transcript_message(m) for m in messages],
    }


def handoff_state(*, session_key: str, conversation_id: Any) -> dict[str, Any] | None:
    """For the customer's page after a reload: the latest handoff's status and agent names by
    message id; None when the conversation is not this session's."""
    conversation = Conversation.objects.filter(id=conversation_id, session_key=session_key).first()
    if conversation is None:
        return None
    latest = conversation.handoffs.select_related("agent", "conversation").order_by("-id").first()
    agents = {
        str(m.id): agent_name(m.agent)
        for m in conversation.messages.filter(role=Message.Role.AGENT).select_related("agent")
    }
    return {"handoff": status_frame(latest) if latest else None, "agents": agents}
