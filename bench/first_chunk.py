"""Time to first streamed chunk and to answer.end over a real WebSocket against a running server.

Usage: python bench/first_chunk.py [--url ws://127.0.0.1:8000/ws/chat/] [--question TEXT] [--repeat N]
Prints JSON. Start the server first (make run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import websockets


async def ask_once(url: str, question: str) -> dict:
    """One question on a fresh socket: times to answer.start, first delta, end."""
    async with websockets.connect(url, origin="http://127.0.0.1:8000") as socket:
        started = time.perf_counter()
        await socket.send(json.dumps({"type": "ask", "text": question}))
        marks: dict = {"deltas": 0}
        while True:
            frame = json.loads(await socket.recv())
            now = (time.perf_counter() - started) * 1000
            if frame["type"] == "answer.start":
                marks["start_ms"] = now
            elif frame["type"] == "answer.delta":
                marks["deltas"] += 1
                marks.setdefault("first_delta_ms", now)
            elif frame["type"] in ("answer.end", "error"):
                marks["end_ms"] = now
                marks["end"] = {
                    k: frame.get(k) for k in ("type", "tier", "cached", "status", "code")
                }
                marks["sources"] = [s["title"] for s in frame.get("sources", [])]
                return marks


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/chat/")
    parser.add_argument("--question", default="How long do I have to return an item?")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [await ask_once(args.url, args.question) for _ in range(args.repeat)]
    firsts = [r["first_delta_ms"] for r in runs if "first_delta_ms" in r]
    print(
        json.dumps(
            {
                "question": args.question,
                "runs": runs,
                "first_delta_ms_first_run": firsts[0] if firsts else None,
                "first_delta_ms_p50": statistics.median(firsts) if firsts else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
