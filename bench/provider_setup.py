"""What preparing one model call costs on the event loop: the product's provider (one shared TLS
context) against a client left to build its own (openai's default), in the same run.

Usage: python bench/provider_setup.py [--calls 50]
Prints JSON: milliseconds per construction, median of the calls, for each way in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


def timed(build, calls: int) -> list[float]:  # noqa: ANN001
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        build()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    """Time both ways, alternating rounds so the machine's load falls on both alike."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    import django

    django.setup()
    import openai

    from routing.providers import OpenAICompatibleProvider, ProviderConfig

    config = ProviderConfig(
        name="medium",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key="local",
        timeout_seconds=30.0,
        max_retries=0,
    )
    ways = {
        "product_provider": lambda: OpenAICompatibleProvider(config),
        "client_with_its_own_tls_context": lambda: openai.AsyncOpenAI(
            base_url=config.base_url, api_key="local", max_retries=0
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(5):
        for name, build in ways.items():
            times[name] += timed(build, max(1, args.calls // 5))
    result = {
        "benchmark": "provider_setup",
        "ms_per_construction_p50": {n: round(statistics.median(t), 2) for n, t in times.items()},
        "calls_each": len(times["product_provider"]),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    base = result["ms_per_construction_p50"]["client_with_its_own_tls_context"]
    result["ratio_product_over_own_context"] = round(
        result["ms_per_construction_p50"]["product_provider"] / base, 3
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
