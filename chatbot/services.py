"""Chat writes that several entry points share (the consumer, later the HTTP API and the dashboard)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatbot.models import Message


class FeedbackError(Exception):
    """Feedback could not be stored; code is stable ('not_found', 'bad_feedback')."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Called after a thumbs is stored, with the message and the previous value: the cache and the
# router register here (e.g. a thumbs-down on a cached answer retires that cache entry).
FeedbackHook = Callable[..., Awaitable[None]]
FEEDBACK_HOOKS: list[FeedbackHook] = []


def feedback_hook_register(*, hook: FeedbackHook) -> None:
    """Have hook(message=..., previous=...) awaited after every stored thumbs."""
    if hook not in FEEDBACK_HOOKS:
        FEEDBACK_HOOKS.append(hook)


async def message_feedback(
    *, session_key: str, message_id: Any, value: Any, reason: Any = None
) -> Message:
    """Store a thumbs (1 or -1; None clears it) on an assistant answer of this session's conversations.

    A thumbs-down may carry a reason (Message.FeedbackReason); a thumbs-down without one keeps
    the reason already given, anything else clears it.
    """
    if value not in (1, -1, None) or isinstance(value, bool):
        raise FeedbackError("bad_feedback", "Feedback value must be 1 (up) or -1 (down).")
    if reason is not None and reason not in Message.FeedbackReason.values:
        choices = ", ".join(Message.FeedbackReason.values)
        raise FeedbackError("bad_feedback", f"Feedback reason must be one of: {choices}.")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise FeedbackError("bad_feedback", "Feedback needs the numeric message_id of an answer.")
    try:
        message = await Message.objects.aget(
            id=message_id,
            role=Message.Role.ASSISTANT,
            conversation__session_key=session_key,
        )
    except Message.DoesNotExist:
        # Same answer for "no such message" and "another session's message": nothing leaks.
        raise FeedbackError("not_found", "That answer does not exist in this session.") from None
    previous = message.feedback
    message.feedback = value
    if value != -1:
        message.feedback_reason = ""
    elif reason is not None:
        message.feedback_reason = reason
    elif previous != -1:
        message.feedback_reason = ""
    await message.asave(update_fields=["feedback", "feedback_reason"])
    for hook in FEEDBACK_HOOKS:
        await hook(message=message, previous=previous)
    return message


async def _cache_feedback_hook(*, message: Message, previous: Any) -> None:
    # Issue 7: a thumbs-down on a cached answer retires that entry and records a false hit.
    if message.cached and message.feedback == -1:
        from retrieval.cache import cache_false_hit

        await cache_false_hit(message_id=message.id)


feedback_hook_register(hook=_cache_feedback_hook)


async def _router_feedback_hook(*, message: Message, previous: Any) -> None:
    # A thumbs replaces the scorer's accuracy in the reward the router learned from the answer.
    if message.feedback != previous:
        from asgiref.sync import sync_to_async

        from routing.router import router_feedback

        await sync_to_async(router_feedback)(message_id=message.id, feedback=message.feedback)


feedback_hook_register(hook=_router_feedback_hook)
