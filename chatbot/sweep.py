"""Answers left `streaming` by a process that died (SIGKILL, out of memory, a power cut)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from chatbot.models import Message


def streaming_grace_seconds() -> float:
    """How old a `streaming` answer must be before no live process can still be writing it.

    No answer runs longer than the cascade's deadline plus the follow-up rewrite, so the grace
    is never shorter than that, whatever CHAT_STREAMING_GRACE_SECONDS says.
    """
    longest = settings.CASCADE_DEADLINE_SECONDS + settings.CHAT_REWRITE_TIMEOUT_SECONDS
    return max(float(settings.CHAT_STREAMING_GRACE_SECONDS), longest + 30.0)


def messages_sweep_streaming(*, now: datetime | None = None) -> int:
    """Mark answers still `streaming` after the grace period as interrupted; returns how many.

    Safe with several app processes (and several supervisors sweeping at once): only answers
    older than any live process could still be writing are touched, and it is one UPDATE. Should
    a live process still finish such an answer, its own final save overwrites this one.
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=streaming_grace_seconds())
    return Message.objects.filter(status=Message.Status.STREAMING, created_at__lt=cutoff).update(
        status=Message.Status.INTERRUPTED, error_code="server_stopped"
    )
