"""Handoff to a person: services that open, take, answer and close a handoff, and tell both sides.

Both sides hear about changes only through channel-layer groups (`group_send`), so the same code
runs on the in-memory layer of one process and on Redis across several Daphne processes:
- every customer socket of a browser session joins `session_group(session_key)`;
- every agent's inbox socket joins `INBOX_GROUP`.
Everything is stored first (agent replies are Messages), so a customer who closed the tab finds
the reply in the conversation when they come back.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from chatbot.handoff_intent import wants_human
from chatbot.handoff_selectors import (
    OPEN,
    HandoffError,
    agent_name,
    handoff_get,
    inbox_row,
    status_frame,
    support_hours,
    transcript_message,
)
from chatbot.models import Conversation, Handoff, Message, WidgetSite

logger = logging.getLogger(__name__)

INBOX_GROUP = "handoff.inbox"
# The channel-layer event type both consumers handle by sending `frame` to their browser.
FRAME_EVENT = "chat.frame"


def session_group(session_key: str) -> str:
    """The group of a browser session's chat sockets (a hash: group names allow few characters)."""
    return "chat.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


async def broadcast(group: str, frame: dict[str, Any]) -> None:
    """Send a protocol frame to every socket in a group (any process, any channel layer)."""
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(group, {"type": FRAME_EVENT, "frame": frame})


# --- Customer side ---------------------------------------------------------------------------


@dataclass
class Requested:
    """The outcome of a customer's handoff request."""

    handoff: Handoff
    created: bool
    email_added: bool


def _question_of(conversation: Conversation) -> str:
    # The standalone question (the follow-up rewrite's output) of the latest bot answer, else
    # the customer's latest words that were not the request for a person itself.
    recent = conversation.messages.exclude(role=Message.Role.AGENT).order_by("-id")[:20]
    for message in recent:
        if message.role == Message.Role.ASSISTANT and message.standalone_question:
            return message.standalone_question
        if message.role == Message.Role.USER and not wants_human(message.content):
            return message.content
    return ""


def _request_sync(
    *,
    session_key: str,
    conversation_id: Any,
    reason: str,
    email: str,
    site: WidgetSite | None,
) -> Requested:
    with transaction.atomic():
        if conversation_id:
            try:
                conversation = Conversation.objects.select_for_update().get(
                    id=conversation_id, session_key=session_key
                )
            except (Conversation.DoesNotExist, ValueError, ValidationError):
                raise HandoffError(
                    "not_found", "That conversation does not exist in this session."
                ) from None
        else:
            conversation = Conversation.objects.create(
                session_key=session_key, site=site, title="Talk to a person"
            )
        handoff = (
            Handoff.objects.select_related("agent", "conversation__site")
            .filter(conversation=conversation, status__in=OPEN)
            .first()
        )
        if handoff is not None:
            email_added = bool(email) and handoff.email != email
            if email_added:
                handoff.email = email
                handoff.save(update_fields=["email"])
            return Requested(handoff, created=False, email_added=email_added)
        hours = support_hours()
        handoff = Handoff.objects.create(
            conversation=conversation,
            reason=reason,
            email=email,
            question=_question_of(conversation),
            outside_hours=hours is not None and not hours.is_open(timezone.now()),
        )
        conversation.save(update_fields=["updated_at"])
        handoff = Handoff.objects.select_related("agent", "conversation__site").get(id=handoff.id)
        return Requested(handoff, created=True, email_added=bool(email))


async def handoff_request(
    *,
    session_key: str,
    conversation_id: Any,
    reason: Any = Handoff.Reason.ASKED,
    email: Any = "",
    site: WidgetSite | None = None,
) -> Handoff:
    """Open a handoff for a session's conversation (or return the open one, adding the e-mail).

    No conversation_id starts a conversation for it. Agents' inboxes hear of it at once; outside
    SUPPORT_HOURS agents are e-mailed as well.
    """
    if reason not in Handoff.Reason.values:
        raise HandoffError(
            "bad_handoff", f"reason must be one of {', '.join(Handoff.Reason.values)}."
        )
    email = (email or "").strip() if isinstance(email, str) or email is None else None
    if email is None or len(email) > 254:
        raise HandoffError("bad_email", "Please give a valid e-mail address.")
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise HandoffError("bad_email", "Please give a valid e-mail address.") from None
    request = database_sync_to_async(
        partial(
            _request_sync,
            session_key=session_key,
            conversation_id=conversation_id,
            reason=reason,
            email=email,
            site=site,
        )
    )
    try:
        result = await request()
    except IntegrityError:
        # Two tabs asked at the same moment: the other request opened it.
        result = await request()
    handoff = result.handoff
    if result.created or result.email_added:
        await broadcast(INBOX_GROUP, {"type": "handoff.update", "handoff": inbox_row(handoff)})
    if handoff.outside_hours and (result.created or result.email_added):
        await _notify_agents(handoff, first=result.created)
    return handoff


async def handoff_customer_message(*, handoff: Handoff, message: Message) -> None:
    """A customer's words while a person holds the conversation: to the agents, not the bot."""
    await broadcast(
        INBOX_GROUP,
        {
            "type": "conversation.message",
            "handoff_id": handoff.id,
            "message": transcript_message(message),
        },
    )


async def _notify_agents(handoff: Handoff, *, first: bool) -> None:
    def recipients() -> list[str]:
        # Permissions live in the model backend (others, like a login throttle, hold none).
        users = get_user_model().objects.with_perm(
            "chatbot.handle_handoff",
            include_superusers=True,
            backend="django.contrib.auth.backends.ModelBackend",
        )
        return sorted({u.email for u in users.filter(is_staff=True) if u.email})

    try:
        to = await database_sync_to_async(recipients)()
    except Exception:
        # The handoff is stored and in the inbox; a failed notice must not lose it.
        logger.exception("could not find agents to e-mail about handoff %s", handoff.id)
        return
    if not to:
        logger.warning("handoff %s outside hours: no agent has an e-mail address", handoff.id)
        return
    hours = support_hours()
    subject = (
        "A customer asks for a person" if first else "A waiting customer left an e-mail address"
    )
    body = "\n".join(
        [
            f"Question: {handoff.question or '(none yet)'}",
            f"Customer's e-mail: {handoff.email or '(not given)'}",
            f"Asked at: {handoff.created_at:%Y-%m-%d %H:%M %Z}",
            f"Opening hours: {hours.spec if hours else 'always'}",
            f"Open the inbox: {settings.SUPPORT_INBOX_URL}",
        ]
    )
    try:
        # SMTP can be slow: off the event loop, and not holding the database thread.
        await sync_to_async(send_mail, thread_sensitive=False)(
            subject=f"[{settings.COMPANY_NAME}] {subject}",
            message=body,
            from_email=None,
            recipient_list=to,
        )
    except Exception:
        # The handoff is stored and in the inbox; a mail failure must not lose it.
        logger.exception("could not e-mail agents about handoff %s", handoff.id)


# --- Agent side ------------------------------------------------------------------------------


def _take_sync(*, handoff_id: Any, agent: Any) -> Handoff:
    with transaction.atomic():
        handoff = handoff_get(handoff_id, lock=True)
        if handoff.status == Handoff.Status.CLOSED:
            raise HandoffError("closed", "This handoff is closed.")
        if handoff.status == Handoff.Status.JOINED and handoff.agent_id != agent.id:
            raise HandoffError("taken", f"{agent_name(handoff.agent)} already has it.")
        handoff.status, handoff.agent = Handoff.Status.JOINED, agent
        handoff.joined_at = handoff.joined_at or timezone.now()
        handoff.save(update_fields=["status", "agent", "joined_at"])
        return handoff


def _say_sync(*, handoff_id: Any, agent: Any, text: str) -> tuple[Handoff, Message, str]:
    with transaction.atomic():
        handoff = handoff_get(handoff_id, lock=True)
        if handoff.status != Handoff.Status.JOINED or handoff.agent_id != agent.id:
            raise HandoffError("not_yours", "Take the conversation before writing in it.")
        message = Message.objects.create(
            conversation_id=handoff.conversation_id,
            role=Message.Role.AGENT,
            content=text,
            agent=agent,
        )
        Conversation.objects.filter(id=handoff.conversation_id).update(updated_at=timezone.now())
        return handoff, message, handoff.conversation.session_key


def _close_sync(*, handoff_id: Any, agent: Any) -> tuple[Handoff, str]:
    with transaction.atomic():
        handoff = handoff_get(handoff_id, lock=True)
        if handoff.status == Handoff.Status.CLOSED:
            raise HandoffError("closed", "This handoff is already closed.")
        if handoff.status == Handoff.Status.JOINED and handoff.agent_id != agent.id:
            raise HandoffError("taken", f"{agent_name(handoff.agent)} has it.")
        handoff.status, handoff.closed_at = Handoff.Status.CLOSED, timezone.now()
        if handoff.agent_id is None:
            handoff.agent = agent
        handoff.save(update_fields=["status", "closed_at", "agent"])
        return handoff, handoff.conversation.session_key


def _cancel_sync(*, session_key: str, conversation_id: Any) -> Handoff:
    with transaction.atomic():
        try:
            handoff = (
                Handoff.objects.select_for_update(of=("self",))
                .select_related("agent", "conversation__site")
                .get(
                    conversation_id=conversation_id,
                    conversation__session_key=session_key,
                    status__in=OPEN,
                )
            )
        except (Handoff.DoesNotExist, ValueError, ValidationError):
            raise HandoffError(
                "not_found", "No one is being asked for in that conversation."
            ) from None
        handoff.status, handoff.closed_at = Handoff.Status.CLOSED, timezone.now()
        handoff.save(update_fields=["status", "closed_at"])
        return handoff


async def handoff_take(*, handoff_id: Any, agent: Any) -> Handoff:
    """An agent takes a waiting handoff: the customer is told a person joined."""
    handoff = await database_sync_to_async(_take_sync)(handoff_id=handoff_id, agent=agent)
    session_key = handoff.conversation.session_key
    await broadcast(session_group(session_key), status_frame(handoff))
    await broadcast(INBOX_GROUP, {"type": "handoff.update", "handoff": inbox_row(handoff)})
    return handoff


async def handoff_say(*, handoff_id: Any, agent: Any, text: Any) -> Message:
    """Store an agent's words in the conversation and put them on the customer's screen."""
    if not isinstance(text, str) or not text.strip():
        raise HandoffError("empty", "Type a message first.")
    text = text.strip()
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise HandoffError(
            "too_long", f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters."
        )
    handoff, message, session_key = await database_sync_to_async(_say_sync)(
        handoff_id=handoff_id, agent=agent, text=text
    )
    await broadcast(
        session_group(session_key),
        {
            "type": "agent.message",
            "text": message.content,
            "agent": agent_name(agent),
            "message_id": message.id,
            "conversation_id": str(handoff.conversation_id),
            "created_at": message.created_at.isoformat(),
        },
    )
    await broadcast(
        INBOX_GROUP,
        {
            "type": "conversation.message",
            "handoff_id": handoff.id,
            "message": transcript_message(message),
        },
    )
    return message


async def handoff_close(*, handoff_id: Any, agent: Any) -> Handoff:
    """An agent closes a handoff: the bot answers this conversation again."""
    handoff, session_key = await database_sync_to_async(_close_sync)(
        handoff_id=handoff_id, agent=agent
    )
    await _closed(handoff, session_key)
    return handoff


async def handoff_cancel(*, session_key: str, conversation_id: Any) -> Handoff:
    """The customer no longer waits for a person (or leaves one): the bot answers again."""
    handoff = await database_sync_to_async(_cancel_sync)(
        session_key=session_key, conversation_id=conversation_id
    )
    await _closed(handoff, session_key)
    return handoff


async def _closed(handoff: Handoff, session_key: str) -> None:
    await broadcast(session_group(session_key), status_frame(handoff))
    await broadcast(INBOX_GROUP, {"type": "handoff.update", "handoff": inbox_row(handoff)})
