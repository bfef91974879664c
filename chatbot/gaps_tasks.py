"""Background work for the gap inbox: embedding a backlog of questions off the page's request."""

from __future__ import annotations

from django.core.cache import cache
from django_tasks import task


@task()
def gap_vectors_task() -> int:
    """Embed and store every gap question without a vector (the inbox groups them next view)."""
    from chatbot.gaps import FILL_QUEUED_KEY, gap_vectors_fill

    try:
        return gap_vectors_fill()
    finally:
        cache.delete(FILL_QUEUED_KEY)
