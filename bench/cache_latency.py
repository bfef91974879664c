"""Cache hit against miss, end to end over the WebSocket: time from `ask` to `answer.end`.

Usage:
  python bench/cache_latency.py --start [--hits-per-question 5]
      Starts its own stack: a throw-away database (bench_cache_latency) with the demo help
      centre and the default tiers, the default tier's bundled model (serve_models, free port)
      and Daphne (free port); everything is stopped and dropped at the end.
  python bench/cache_latency.py --url ws://127.0.0.1:8000/ws/chat/
      Against a running server (`make run`); its rate limit (CHAT_RATE_LIMIT_PER_MINUTE) must
      allow the number of asks, and its tiers decide whether a first answer is stored.

Each question is asked once on a fresh socket (a miss: retrieval and the cascade; the answer
is stored when accepted), then asked again N times (hits). Misses and hits are timed in the
same run. With --start the default tier's threshold is set to 0 so that its first answer is
accepted and stored (otherwise nothing would be cached to hit). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# Paraphrases of QUESTIONS (same order) that the learned decision accepts: hits that must be
# embedded.
PARAPHRASES = [
    "How many working days does standard delivery take in the UK?",
    "Is it possible to cancel an order after placing it?",
    "Is shipping to Canada available?",
    "Can bulky items be sent by express delivery?",
    "What is the cut-off time for dispatch from the EU store?",
    "Is it possible to add items to an existing order?",
]
QUESTIONS = [
    "How long does standard delivery take in the UK?",
    "Can I cancel an order after placing it?",
    "Do you ship to Canada?",
    "Is express delivery available for bulky items?",
    "What is the dispatch cut-off time for the EU store?",
    "Can I add items to an existing order?",
]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def ask_once(url: str, question: str) -> dict:
    """One question on a fresh socket; milliseconds from sending `ask` to `answer.end`."""
    # The server checks the origin's host and port against its own.
    origin = f"http://{urlsplit(url).netloc}"
    async with websockets.connect(url, origin=origin, max_size=2**22) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "ask", "text": question}))
        out: dict = {"question": question}
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "answer.start":
                out["cached_at_start"] = frame.get("cached")
                out["start_ms"] = (time.perf_counter() - started) * 1000
            elif frame["type"] in ("answer.end", "error"):
                out["ms"] = (time.perf_counter() - started) * 1000
                out["type"] = frame["type"]
                out["cached"] = bool(frame.get("cached"))
                out["similarity"] = frame.get("cache_similarity")
                out["status"] = frame.get("status") or frame.get("code")
                out["abstained"] = frame.get("abstained")
                out["tier"] = frame.get("tier")
                return out


def percentiles(values: list[float]) -> dict:
    """p50 and p95 (nearest rank) in milliseconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(p95, 2),
    }


async def measure(url: str, hits_per_question: int) -> dict:
    """Misses first (one per question), then repeats of the stored questions and paraphrases."""
    misses, repeats, paraphrases, other = [], [], [], []
    for question in QUESTIONS:
        run = await ask_once(url, question)
        (misses if not run["cached"] else other).append(run)
    for round_ in range(hits_per_question):
        for question in QUESTIONS:
            run = await ask_once(url, question)
            (repeats if run["cached"] else other).append(run)
        if round_ == 0:
            # First ask of each paraphrase: its text is new, so it is embedded.
            for question in PARAPHRASES:
                run = await ask_once(url, question)
                (paraphrases if run["cached"] else other).append(run)
    hits = repeats + paraphrases
    return {
        "miss": percentiles([r["ms"] for r in misses]),
        "hit": percentiles([r["ms"] for r in hits]),
        "hit_repeated_question": percentiles([r["ms"] for r in repeats]),
        "hit_paraphrase_first_ask": percentiles([r["ms"] for r in paraphrases]),
        "hit_to_answer_start": percentiles([r["start_ms"] for r in hits]),
        "miss_runs": [
            {k: r.get(k) for k in ("question", "ms", "status", "abstained", "tier")} for r in misses
        ],
        "not_hit_on_repeat": [
            {k: r.get(k) for k in ("question", "ms", "status", "abstained")} for r in other
        ],
        "goal": "hit p50 <= 25 ms",
    }


class Stack:
    """A throw-away database, the default tier's model server and Daphne, stopped together."""

    def __init__(self) -> None:
        from knowledge_db import bench_database

        self.drop = bench_database("bench_cache_latency")
        from django.conf import settings
        from django.core.management import call_command

        from routing.defaults import tiers_ensure_defaults
        from routing.models import ModelTier
        from routing.servers import wait_until_healthy

        tiers_ensure_defaults()
        call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
        tier = ModelTier.objects.get(name=settings.CHAT_DEFAULT_TIER)
        model_port, web_port = free_port(), free_port()
        ModelTier.objects.exclude(id=tier.id).update(enabled=False)
        ModelTier.objects.filter(id=tier.id).update(
            base_url=f"http://127.0.0.1:{model_port}/v1", threshold=0.0, enabled=True
        )
        self.tier = {"name": tier.name, "model": tier.model}
        env = {
            **os.environ,
            "CHAT_RATE_LIMIT_PER_MINUTE": "100000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "100000",
        }
        self.logs = [open(ROOT / "var" / f"bench_cache_latency_{n}.log", "wb") for n in "md"]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "serve_models",
                    "--serve",
                    f"{tier.local_model}={model_port}:{tier.context_window}",
                ],
                cwd=ROOT,
                env=env,
                stdout=self.logs[0],
                stderr=subprocess.STDOUT,
            )
        ]
        try:
            wait_until_healthy(f"http://127.0.0.1:{model_port}/v1", timeout=300)
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(web_port),
                        "chatbot.asgi:application",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=self.logs[1],
                    stderr=subprocess.STDOUT,
                )
            )
            self._wait_ready(web_port)
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{web_port}/ws/chat/"

    @staticmethod
    def _wait_port(port: int, timeout: float = 120) -> None:
        """Until something listens on the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listened on {port}")

    @staticmethod
    def _wait_ready(port: int, timeout: float = 120) -> None:
        """Until Daphne listens and has loaded its models (/readyz's warm-up check, as a load
        balancer would wait; code without that check is taken as ready once it listens)."""
        deadline = time.monotonic() + timeout
        Stack._wait_port(port, timeout)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
                    body = json.loads(r.read())
            except urllib.error.HTTPError as error:  # 503: something is not ready
                body = json.loads(error.read())
            except OSError:  # listening, not yet answering
                time.sleep(0.2)
                continue
            if body.get("checks", {}).get("warm-up", {"ok": True})["ok"]:
                return
            time.sleep(0.2)
        raise TimeoutError(f"Daphne on {port} did not load its models")

    def stop(self) -> None:
        """Stop Daphne and the model server (by their own process ids), drop the database."""
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        self.drop()


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a running server's chat socket (make run)")
    parser.add_argument("--start", action="store_true", help="start a throw-away stack")
    parser.add_argument("--hits-per-question", type=int, default=5)
    parser.add_argument(
        "--vector-memory",
        type=int,
        help="CACHE_VECTOR_MEMORY for the started server (0: every ask is embedded)",
    )
    args = parser.parse_args()
    if not args.url and not args.start:
        parser.error("give --start or --url")
    if args.vector_memory is not None:
        os.environ["CACHE_VECTOR_MEMORY"] = str(args.vector_memory)
    stack = Stack() if args.start else None
    try:
        url = stack.url if stack else args.url
        load_before = os.getloadavg()
        result = asyncio.run(measure(url, args.hits_per_question))
        # Timings on a shared machine mean little without its load (2 cores here).
        result["load_average_1min"] = {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        }
        result["server"] = "started by the script" if stack else url
        result["CACHE_VECTOR_MEMORY"] = os.environ.get("CACHE_VECTOR_MEMORY", "default (2048)")
        if stack:
            result["tier"] = stack.tier
            result["note"] = "default tier only, its threshold set to 0 so first answers are stored"
        print(json.dumps(result, indent=2))
    finally:
        if stack:
            stack.stop()


if __name__ == "__main__":
    main()
