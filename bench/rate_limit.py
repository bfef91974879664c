"""What the chat's rate limit costs per ask once many sessions asked in the last minute: the
product's limiter (chatbot/ratelimit.py) against the `limits` library's moving window on the same
in-memory storage, in the same run.

Usage: python bench/rate_limit.py [--sessions 0,300,1000] [--asks 200] [--interval-ms 20]
Each limiter first counts one ask for each of N sessions (customers of the last minute), then
times --asks more, each from a new session, as the chat socket calls it (test both budgets,
then hit both), one every --interval-ms (50 asks a second by default). CPU seconds include the storage's own upkeep (its expiry sweeps run as event-loop
tasks and threads beside the asks): what the process spends, not only what the ask waits.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


async def measure(allow, sessions: int, asks: int, interval: float) -> dict:  # noqa: ANN001
    for n in range(sessions):
        await allow(f"seen-{n}")
    await asyncio.sleep(0.05)  # let a pending sweep finish before the clock starts
    cpu, wall = time.process_time(), time.perf_counter()
    times = []
    for n in range(asks):
        started = time.perf_counter()
        assert await allow(f"new-{n}")
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(interval)
    await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu
    return {
        "ask_ms_p50": round(statistics.median(times), 3),
        "cpu_ms_per_ask": round(cpu * 1000 / asks, 3),
        "wall_s": round(time.perf_counter() - wall, 2),
    }


def main() -> None:
    """Both limiters at each session count, the product's first."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="0,300,1000")
    parser.add_argument("--asks", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args()
    import django

    django.setup()
    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    from chatbot import ratelimit

    budget = RateLimitItemPerMinute(1_000_000)

    async def run() -> dict:
        out: dict = {}
        for sessions in (int(s) for s in args.sessions.split(",")):
            # A fresh limiter per measure: nothing carried over from the one before.
            ratelimit._limiters.clear()

            async def product(session: str) -> bool:
                return await ratelimit.rate_allow(
                    ratelimit.ASK, session_key=session, address="203.0.113.7"
                )

            moving = MovingWindowRateLimiter(storage_from_string("async+memory://"))

            async def moving_window(session: str, moving: MovingWindowRateLimiter = moving) -> bool:
                checks = [("session", session), ("address", "203.0.113.7")]
                for kind, key in checks:
                    if not await moving.test(budget, "ask", kind, key):
                        return False
                return all([await moving.hit(budget, "ask", kind, key) for kind, key in checks])

            out[f"sessions_{sessions}"] = {
                "product": await measure(product, sessions, args.asks, args.interval_ms / 1000),
                "moving_window_baseline": await measure(
                    moving_window, sessions, args.asks, args.interval_ms / 1000
                ),
            }
            row = out[f"sessions_{sessions}"]
            row["cpu_ratio_product_over_baseline"] = round(
                row["product"]["cpu_ms_per_ask"]
                / max(row["moving_window_baseline"]["cpu_ms_per_ask"], 1e-9),
                3,
            )
        return out

    from django.test import override_settings

    with override_settings(
        CHAT_RATE_LIMIT_PER_MINUTE=1_000_000, CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE=1_000_000
    ):
        result = {
            "benchmark": "rate_limit",
            "asks": args.asks,
            "interval_ms": args.interval_ms,
            **asyncio.run(run()),
        }
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
