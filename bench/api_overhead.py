"""What the OpenAI-compatible API adds over the chat socket for a cached answer, same run.

Usage:
  python bench/api_overhead.py [--n 100] [--out bench/results/api_overhead.json]

Starts its own stack: a throw-away database (bench_api_overhead) with the demo help centre
indexed, one answer cached and approved for everyone, one tier row (never called: every
question here is a cache hit) and Daphne on a free port; all stopped and dropped at the end.
The same question is asked n times on each path, the paths taking turns so load drifts hit
them alike:
- websocket: the chat page's socket (one connection, as a browser keeps it); `ask` to
  `answer.end`;
- api: POST /v1/chat/completions, not streamed, one keep-alive HTTP connection (as the
  openai client keeps it); request to the whole JSON body;
- api_stream: the same with "stream": true; request to `data: [DONE]`;
- openai_client: the official client's chat.completions.create (not streamed), its own
  parsing included.
Each path stores a conversation and its two messages per question, as customers' would.
Prints JSON (milliseconds, p50 and p95 by nearest rank) and writes it to --out;
`overhead_p50_ms` is each API path's p50 minus the socket's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from cache_latency import free_port, percentiles  # noqa: E402

QUESTION = "How many days do I have to return an item?"
ANSWER = "You can return most items within 30 days of delivery [1]."


class Stack:
    """A throw-away database and Daphne, stopped together."""

    def __init__(self) -> None:
        from knowledge_db import bench_database

        self.drop = bench_database("bench_api_overhead")
        self.proc: subprocess.Popen | None = None
        self.log = open(ROOT / "var" / "bench_api_overhead_daphne.log", "wb")

    def start(self) -> None:
        from chatbot.management.commands.run_stack import daphne_command

        self.port = free_port()
        env = {
            **os.environ,
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
            "CHAT_SHOW_DETAILS": "1",  # both paths then send the same answer details
        }
        self.proc = subprocess.Popen(
            daphne_command(bind="127.0.0.1", port=self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daphne exited; see var/bench_api_overhead_daphne.log")
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("daphne did not come up")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop Daphne (by its own process id) and drop the database."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        self.drop()


def seed() -> tuple[str, str]:
    """The demo knowledge, one tier row, the cached answer (approved), a browser session and an
    API key: (session key, API key)."""
    from asgiref.sync import async_to_sync
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from chatbot.api_keys import api_key_create
    from chatbot.pipeline import passage_source
    from retrieval.cache import cache_approve, cache_store
    from retrieval.models import Chunk
    from retrieval.search import passages_served
    from routing.models import ModelTier

    call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
    ModelTier.objects.all().delete()
    ModelTier.objects.create(
        name="small",
        # Never called (every question is a hit): a closed port, so a miss would show as an error.
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="unused",
        order=10,
        enabled=True,
    )
    chunk_id = (
        Chunk.objects.filter(document__source_name="demo/returns-policy.md")
        .order_by("ordinal")
        .values_list("id", flat=True)
        .first()
    )
    source = passage_source(1, passages_served([chunk_id])[chunk_id])
    entry = async_to_sync(cache_store)(
        question=QUESTION, answer=ANSWER, sources=[source], tier="small", session="bench"
    )
    assert entry is not None, "the cache refused the seeded answer"
    cache_approve(entry_ids=[entry])
    session = SessionStore()
    session.save()
    key = api_key_create(name="bench", rate_limit_per_minute=1_000_000).key
    return session.session_key or "", key


async def measure(stack: Stack, n: int, session_key: str, key: str) -> dict:
    """n questions on each path, taking turns; milliseconds per question."""
    import openai

    ws = await websockets.connect(
        f"ws://127.0.0.1:{stack.port}/ws/chat/",
        origin=stack.http,
        additional_headers=[("Cookie", f"sessionid={session_key}")],
        max_size=2**22,
    )
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}
    http = httpx2.AsyncClient(base_url=stack.http, headers=headers, timeout=60)
    client = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key=key, max_retries=0)
    times: dict[str, list[float]] = {
        "websocket": [],
        "api": [],
        "api_stream": [],
        "openai_client": [],
    }
    served: dict[str, set] = {name: set() for name in times}

    async def websocket(i: int) -> None:
        await ws.send(json.dumps({"type": "ask", "text": QUESTION, "client_id": f"b{i}"}))
        text = ""
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "answer.delta":
                text += frame["text"]
            if frame["type"] == "answer.end":
                assert frame["cached"], frame
                served["websocket"].add(text)
                return
            if frame["type"] == "error":
                raise RuntimeError(frame)

    async def api(i: int) -> None:
        response = await http.post("/v1/chat/completions", json=body)
        data = response.json()
        assert response.status_code == 200 and data["frugal"]["cached"], data
        served["api"].add(data["choices"][0]["message"]["content"])

    async def api_stream(i: int) -> None:
        text, cached = "", False
        async with http.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    break
                if line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        text += choice["delta"].get("content") or ""
                    cached = cached or bool(chunk.get("frugal", {}).get("cached"))
        assert cached
        served["api_stream"].add(text)

    async def openai_client(i: int) -> None:
        completion = await client.chat.completions.create(**body)
        assert completion.model_extra["frugal"]["cached"]
        served["openai_client"].add(completion.choices[0].message.content)

    paths = {
        "websocket": websocket,
        "api": api,
        "api_stream": api_stream,
        "openai_client": openai_client,
    }
    # Warm-up: the embedder, database connections, the key and the limiter are first touched.
    for i in range(5):
        for run in paths.values():
            await run(-1 - i)
    for i in range(n):
        for name, run in paths.items():
            started = time.perf_counter()
            await run(i)
            times[name].append((time.perf_counter() - started) * 1000)
    await ws.close()
    await http.aclose()
    await client.close()
    assert all(texts == {ANSWER} for texts in served.values()), served
    figures = {name: percentiles(values) for name, values in times.items()}
    base = figures["websocket"]["p50_ms"]
    figures["overhead_p50_ms"] = {
        name: round(figures[name]["p50_ms"] - base, 2)
        for name in ("api", "api_stream", "openai_client")
    }
    return figures


def main() -> None:
    """Run the benchmark, print its JSON and write it to --out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api_overhead.json"))
    args = parser.parse_args()
    import logging

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    stack = Stack()
    try:
        session_key, key = seed()
        stack.start()
        result = asyncio.run(measure(stack, args.n, session_key, key))
        result["question"] = QUESTION
        result["server"] = "Daphne started by the script, loopback, one process"
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
        result["cpus"] = os.cpu_count()
        text = json.dumps(result, indent=2)
        print(text)
        Path(args.out).write_text(text + "\n")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
