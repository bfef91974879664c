"""How fast a stop reaches the model: cancel a streaming answer, time until the task ends and the
llama.cpp server is idle again (it stops generating when the HTTP stream closes).

Usage: python bench/chat_stop.py [--repeat N] [--after-deltas K]
Starts its own SmolLM2-135M server on a free loopback port (killed at the end). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.providers import (  # noqa: E402
    Generation,
    OpenAICompatibleProvider,
    ProviderConfig,
)
from routing.servers import wait_until_healthy  # noqa: E402

PROMPT = [
    {"role": "system", "content": "You are a helpful support assistant. Answer at length."},
    {"role": "user", "content": "Explain in great detail, step by step, how returns work."},
]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processing(root: str) -> int:
    """Requests the llama.cpp server is working on now (/metrics)."""
    text = urllib.request.urlopen(f"{root}/metrics", timeout=5).read().decode()
    match = re.search(r"^llamacpp:requests_processing\s+([0-9.]+)", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


async def one_stop(base_url: str, after_deltas: int) -> dict:
    """Stream, cancel after some deltas, time the cancel and the server going idle."""
    provider = OpenAICompatibleProvider(
        ProviderConfig(name="small", base_url=base_url, model="smollm2-135m", api_key="local")
    )
    seen = asyncio.Event()
    deltas = 0

    async def stream() -> None:
        nonlocal deltas
        async for _ in provider.stream(messages=PROMPT, max_tokens=600, generation=Generation()):
            deltas += 1
            if deltas >= after_deltas:
                seen.set()

    task = asyncio.create_task(stream())
    await asyncio.wait({task, asyncio.ensure_future(seen.wait())}, return_when="FIRST_COMPLETED")
    if task.done():
        return {"finished_before_stop": True, "deltas": deltas}
    root = base_url.removesuffix("/v1")
    busy_before = await asyncio.to_thread(processing, root)
    started = time.perf_counter()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    cancelled_ms = (time.perf_counter() - started) * 1000
    idle_ms = None
    while time.perf_counter() - started < 10:
        if await asyncio.to_thread(processing, root) == 0:
            idle_ms = (time.perf_counter() - started) * 1000
            break
        await asyncio.sleep(0.02)
    return {
        "deltas_before_stop": deltas,
        "busy_before_stop": busy_before,
        "task_cancelled_ms": round(cancelled_ms, 1),
        "server_idle_ms": round(idle_ms, 1) if idle_ms is not None else None,
    }


async def measure(base_url: str, repeat: int, after_deltas: int) -> list[dict]:
    """Several stops, one after another, against a healthy server."""
    await asyncio.to_thread(wait_until_healthy, base_url, 180)
    return [await one_stop(base_url, after_deltas) for _ in range(repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--after-deltas", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--serve", f"smollm2-135m={port}:2048"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        runs = asyncio.run(measure(base_url, args.repeat, args.after_deltas))
    finally:
        server.terminate()
        server.wait(10)
    idle = [r["server_idle_ms"] for r in runs if r.get("server_idle_ms") is not None]
    cancel = [r["task_cancelled_ms"] for r in runs if "task_cancelled_ms" in r]
    print(
        json.dumps(
            {
                "model": "smollm2-135m",
                "runs": runs,
                "task_cancelled_ms_p50": statistics.median(cancel) if cancel else None,
                "server_idle_ms_p50": statistics.median(idle) if idle else None,
                "server_idle_ms_max": max(idle) if idle else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
