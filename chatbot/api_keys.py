"""API keys for the OpenAI-compatible API: made once, stored hashed, checked, limited, revoked.

A key is `fk-` and 43 URL-safe characters (256 random bits): too long to guess, so a plain
SHA-256 is enough to store it (a slow password hash protects low-entropy secrets, and would
only slow every request). Its first characters are kept as `prefix`, so an admin can tell keys
apart without the key being readable anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.utils import timezone

from chatbot import ratelimit
from chatbot.budget import budget_key_committed_today
from chatbot.models import ApiKey

KEY_PREFIX = "fk-"
PREFIX_LENGTH = 12  # "fk-" and 9 characters: told apart at a glance, useless to an attacker
RATE_ACTION = "api"


@dataclass(frozen=True)
class NewKey:
    """A key just made: the row and the key itself (shown once, never stored)."""

    row: ApiKey
    key: str


def key_hash(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_new() -> str:
    """A fresh key (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_set(*, api_key: ApiKey, key: str) -> None:
    """Make `key` the row's key: only its prefix and hash are kept."""
    api_key.prefix = key[:PREFIX_LENGTH]
    api_key.hashed_key = key_hash(key)


def api_key_create(
    *,
    name: str,
    rate_limit_per_minute: int | None = None,
    daily_cost_cap_usd: Decimal | None = None,
) -> NewKey:
    """Make a key for a client named `name`; the returned key is the only copy there will be."""
    name = name.strip()
    if not name:
        raise ValueError("An API key needs a name (who uses it).")
    key = key_new()
    row = ApiKey(name=name[:100])
    api_key_set(api_key=row, key=key)
    if rate_limit_per_minute is not None:
        row.rate_limit_per_minute = rate_limit_per_minute
    row.daily_cost_cap_usd = daily_cost_cap_usd
    row.full_clean()
    row.save()
    return NewKey(row=row, key=key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Refuse the key from now on (kept for the books: its conversations still name it)."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


async def api_key_find(*, presented: str) -> ApiKey | None:
    """The live key matching what a client presented; None for a missing, wrong or revoked key."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    digest = key_hash(presented)
    row = await ApiKey.objects.filter(hashed_key=digest).afirst()
    # The index finds the row; the comparison itself takes the same time however much matches.
    if row is None or not hmac.compare_digest(row.hashed_key, digest) or row.revoked:
        return None
    return row


async def api_key_rate_allow(*, api_key: ApiKey) -> bool:
    """Count one completion against the key's per-minute limit; False when it is spent."""
    return await ratelimit.rate_allow_key(
        RATE_ACTION, key=str(api_key.id), per_minute=api_key.rate_limit_per_minute
    )


async def api_key_cap_reached(*, api_key: ApiKey) -> bool:
    """True when the key's answers today (paid and in flight) have reached its daily cap."""
    if api_key.daily_cost_cap_usd is None:
        return False
    committed = await sync_to_async(budget_key_committed_today)(api_key_id=api_key.id)
    return committed >= api_key.daily_cost_cap_usd


def api_key_cap(api_key: ApiKey) -> tuple[int, Decimal] | None:
    """The key's cap as the daily budget's reservation takes it (None: no cap of its own)."""
    if api_key.daily_cost_cap_usd is None:
        return None
    return (api_key.id, api_key.daily_cost_cap_usd)
