"""Chat limits: frames per session and per client address (the `limits` library), and a cap on
the answers generating at once in this process.

A session is whatever the socket presents, and a client without a cookie gets a new one on
every connection; the client address is what it cannot shed. The address is the socket's peer,
which Daphne replaces with the proxy's X-Forwarded-For only when it was started with
--proxy-headers (run_stack does so when DJANGO_PROXY_SSL_HEADER says a proxy is trusted), so a
client cannot choose it. IPv6 clients are counted per /64: one host usually holds a whole one.
A socket without a peer address (a Unix socket without proxy headers, an in-process test) has
only the session limits: one shared bucket would throttle every customer at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

# Frames that write to the database or cancel work; malformed frames are refused without either.
ASK = "ask"
CONTROL = "control"  # stop, feedback, handoff requests and cancels

# The in-memory storage holds asyncio locks, which belong to one event loop: one limiter per
# loop (a Daphne process runs one).
# A sliding window counter (this minute's count plus the last minute's, weighted by how much of
# it is still inside the window), not a moving window of every event: the in-memory moving
# window's upkeep sweeps every key with a thread hop each, after every ask: 13-20 ms of CPU
# per ask at 50 asks a second, against 0.6-0.7 ms for the counter (bench/rate_limit.py).
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SlidingWindowCounterRateLimiter] = (
    weakref.WeakKeyDictionary()
)


def client_address(scope: dict[str, Any]) -> str:
    """The key the address limits count under: the peer's IPv4 address or its IPv6 /64
    ("" when the socket has no peer address)."""
    client = scope.get("client") or ("", 0)
    host = str(client[0] or "")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _per_minute(count: int) -> RateLimitItem:
    return RateLimitItemPerMinute(max(count, 0))


def _budgets(action: str) -> tuple[RateLimitItem, RateLimitItem]:
    """(per session, per address) for an action, read from settings at each call."""
    if action == ASK:
        return (
            _per_minute(settings.CHAT_RATE_LIMIT_PER_MINUTE),
            _per_minute(settings.CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE),
        )
    return (
        _per_minute(settings.CHAT_CONTROL_RATE_LIMIT_PER_MINUTE),
        _per_minute(settings.CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE),
    )


def _limiter() -> SlidingWindowCounterRateLimiter:
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = SlidingWindowCounterRateLimiter(
            storage_from_string(settings.CHAT_RATE_LIMIT_STORAGE)
        )
        _limiters[loop] = limiter
    return limiter


async def rate_allow(action: str, *, session_key: str, address: str) -> bool:
    """Count one frame against both the session's and the address's budget; False when either
    is spent (then neither is charged, so a refused frame costs nothing)."""
    limiter = _limiter()
    per_session, per_address = _budgets(action)
    checks = [(per_session, "session", session_key)]
    if address:
        checks.append((per_address, "address", address))
    for item, kind, key in checks:
        if item.amount == 0 or not await limiter.test(item, action, kind, key):
            return False
    for item, kind, key in checks:
        if not await limiter.hit(item, action, kind, key):
            return False
    return True


async def rate_allow_key(action: str, *, key: str, per_minute: int) -> bool:
    """Count one request against a budget of its own (an API key's, `per_minute` a minute);
    False when it is spent (0 allows nothing)."""
    item = _per_minute(per_minute)
    return item.amount > 0 and await _limiter().hit(item, action, "key", key)


@dataclass
class _Slots:
    """Answers generating now in this process. The event loop is single-threaded and taking or
    giving back a slot never awaits, so a plain counter is exact."""

    taken: int = 0


_slots = _Slots()


def generation_take() -> bool:
    """Take one of CHAT_MAX_CONCURRENT_ANSWERS slots; False when all are in use (say `busy`)."""
    if _slots.taken >= settings.CHAT_MAX_CONCURRENT_ANSWERS:
        return False
    _slots.taken += 1
    return True


def generation_give_back() -> None:
    """Return a slot taken with generation_take (exactly once per slot)."""
    _slots.taken = max(_slots.taken - 1, 0)


def generations_running() -> int:
    """How many slots are taken now (for tests and diagnostics)."""
    return _slots.taken
