"""What customers see of an answer: no tier names, tokens or costs unless CHAT_SHOW_DETAILS (staff always see them)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

# Keys of answer frames and stored messages that name tiers or carry usage and money.
DETAIL_KEYS = frozenset(
    {
        "tier",
        "from_tier",
        "to_tier",
        "attempts",
        "usage",
        "cost",
        "cost_estimated",
        "cost_if_largest",
        "baseline",
        "rewrite",
        "conversation_totals",
        "latency_ms",
        "cache_similarity",
        "abstain_reason",
    }
)


def details_visible(user: Any) -> bool:
    """True when this viewer may see tiers, tokens and costs (the setting, or a staff user)."""
    if settings.CHAT_SHOW_DETAILS:
        return True
    return bool(user is not None and getattr(user, "is_staff", False) and user.is_active)


def customer_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame (or stored message) without the details customers do not see."""
    return {k: v for k, v in frame.items() if k not in DETAIL_KEYS}


def conversation_for_viewer(data: dict[str, Any], *, user: Any) -> dict[str, Any]:
    """A conversation_detail() result as this viewer may see it."""
    if details_visible(user):
        return data
    return {**data, "messages": [customer_frame(m) for m in data["messages"]]}
