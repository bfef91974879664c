"""Load over the chat socket, loopback only: idle and streaming sockets held open while many
customers connect, ask a question whose answer is cached, and close. Prints JSON.

Usage:
  python bench/load.py --start [--minutes 10] [--cycles 10000] [--idle 200] [--streaming 20]
      Starts its own stack: a throw-away database (bench_load) with the demo help centre, the
      small bundled model (serve_models, free port) as the only tier, and Daphne (free port,
      run_stack's flags); everything is stopped and dropped at the end.
  python bench/load.py --url ws://127.0.0.1:8000/ws/chat/ [--server-pid PID]
      Against a running server (`make run`) on loopback: its limits (CHAT_RATE_LIMIT_*,
      CHAT_MAX_CONCURRENT_ANSWERS) must allow the load; --server-pid gives Daphne's memory.
  --compare-db-threads 1
      Also (with --start) runs the cycles alone against Daphne started with
      CHAT_DATABASE_THREADS=1 (Channels' one shared database thread) and with the default, and
      reports throughput and p95 of both from the same run.

What it measures:
- baseline: one socket at a time, connect/ask/close on cached questions: time to first
  answer.delta (TTFD);
- load: `--idle` sockets connected and silent, `--streaming` sockets asking questions that
  need the model one after another, and `--cycles` connect/ask/close cycles on cached questions
  (`--concurrency` at once), for at least `--minutes`;
- dropped sockets (an idle or streaming socket closed by the server or failing a ping), lost
  messages (an acknowledged question not stored, with --start; an ask that never got its
  answer.end), refusals (`busy`, `rate_limited`), TTFD p50/p95 under load and its overhead
  against the baseline (goal p95 overhead < 300 ms), Daphne's memory (RSS) before and after the
  load phase (goal growth < 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cache_latency import free_port, percentiles  # noqa: E402

# Questions the demo help centre answers; asked until cached, then the cycles reuse them.
CACHED = [
    "How long does standard delivery take in the UK?",
    "Can I cancel an order after placing it?",
    "Do you ship to Canada?",
    "Can I add items to an existing order?",
    "How long do refunds take?",
    "Can I return a sale item?",
]
# Streaming sockets ask these with a running number: never cached, so the model answers.
STREAMED = [
    "What should I do if parcel {n} arrived damaged?",
    "Is there a warranty on item {n}?",
    "How do I change the address of order {n}?",
]


def rss_kib(pid: int | None) -> int | None:
    """Resident memory of a process and its threads, KiB (None: unknown)."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Tally:
    """What the load phase saw."""

    def __init__(self) -> None:
        self.ttfd: list[float] = []
        self.cycle_ms: list[float] = []
        self.acked: list[int] = []
        self.no_end = 0  # asks acknowledged whose answer.end never came
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.dropped = 0
        self.cached = 0
        self.not_cached = 0
        self.streamed_answers = 0


async def ask(url: str, question: str, tally: Tally | None, *, timeout: float = 120) -> dict:
    """Connect, ask, read to answer.end, close; TTFD and what happened."""
    origin = f"http://{urlsplit(url).netloc}"
    started = time.perf_counter()
    out: dict = {"ttfd_ms": None, "cached": None, "status": None}
    try:
        async with websockets.connect(url, origin=origin, max_size=2**22, open_timeout=30) as ws:
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "ask", "text": question}))
            async with asyncio.timeout(timeout):
                while True:
                    frame = json.loads(await ws.recv())
                    kind = frame["type"]
                    if kind == "ask.ack":
                        out["message_id"] = frame.get("message_id")
                    elif kind == "answer.start":
                        out["cached"] = frame.get("cached")
                    elif kind == "answer.delta" and out["ttfd_ms"] is None:
                        out["ttfd_ms"] = (time.perf_counter() - sent) * 1000
                    elif kind == "error" and "message_id" not in out:
                        out["status"] = f"refused:{frame.get('code')}"
                        break
                    elif kind == "answer.end":
                        out["status"] = frame.get("status")
                        break
    except TimeoutError:
        out["status"] = "timeout"
    except (OSError, websockets.WebSocketException) as exc:
        out["status"] = f"socket:{type(exc).__name__}"
    out["ms"] = (time.perf_counter() - started) * 1000
    if tally is not None:
        status = out["status"] or ""
        if out.get("message_id"):
            tally.acked.append(out["message_id"])
            if status in ("timeout",) or status.startswith("socket:"):
                tally.no_end += 1
        if status.startswith("refused:"):
            code = status.split(":", 1)[1]
            tally.refused[code] = tally.refused.get(code, 0) + 1
        elif status not in ("complete",):
            tally.errors[status] = tally.errors.get(status, 0) + 1
    return out


async def idle_socket(url: str, stop: asyncio.Event, tally: Tally) -> None:
    """Connect and stay silent until stop; a close by the server or a failed ping is a drop."""
    origin = f"http://{urlsplit(url).netloc}"
    try:
        async with websockets.connect(url, origin=origin, open_timeout=60) as ws:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 20)
                except TimeoutError:
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, 30)
    except (OSError, TimeoutError, websockets.WebSocketException):
        tally.dropped += 1


async def streaming_socket(url: str, n: int, stop: asyncio.Event, tally: Tally) -> None:
    """One socket asking model-answered questions one after another until stop."""
    origin = f"http://{urlsplit(url).netloc}"
    asked = 0
    try:
        async with websockets.connect(url, origin=origin, open_timeout=60) as ws:
            while not stop.is_set():
                question = STREAMED[asked % len(STREAMED)].format(n=n * 10_000 + asked)
                asked += 1
                await ws.send(json.dumps({"type": "ask", "text": question}))
                acked = False
                async with asyncio.timeout(300):
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "ask.ack":
                            acked = True
                            tally.acked.append(frame["message_id"])
                        elif frame["type"] == "error" and not acked:
                            code = frame.get("code")
                            tally.refused[code] = tally.refused.get(code, 0) + 1
                            await asyncio.sleep(1)
                            break
                        elif frame["type"] == "answer.end":
                            tally.streamed_answers += 1
                            break
    except (OSError, TimeoutError, websockets.WebSocketException):
        tally.dropped += 1


async def cycles(url: str, count: int, concurrency: int, tally: Tally) -> float:
    """`count` connect/ask/close cycles on cached questions, `concurrency` at once; seconds."""
    queue = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for n in queue:
            run = await ask(url, CACHED[n % len(CACHED)], tally)
            tally.cycle_ms.append(run["ms"])
            if run["ttfd_ms"] is not None:
                tally.ttfd.append(run["ttfd_ms"])
            if run["cached"]:
                tally.cached += 1
            elif run["cached"] is False:
                tally.not_cached += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def prime(url: str) -> list[str]:
    """Ask each question until an ask is served from the cache; the questions that are (for a
    running server, whose tiers must produce and share the answers)."""
    cached = []
    for question in CACHED:
        for _ in range(4):
            run = await ask(url, question, None, timeout=300)
            if run["cached"]:
                cached.append(question)
                break
    return cached


async def seed_cache() -> list[str]:
    """The started stack's cache: each question's best passage, cited, stored through the cache
    service (its support and sharing checks) and approved as an admin would; the questions
    stored. A model's first answer is not waited for: under load it may time out."""
    from asgiref.sync import sync_to_async

    from chatbot.pipeline import retrieve
    from retrieval.cache import cache_approve, cache_store

    stored = []
    for question in CACHED:
        passages = await retrieve(question=question)
        if not passages:
            continue
        best = passages[0]
        source = {
            "n": 1,
            "chunk_id": best.chunk_id,
            "document_id": best.document_id,
            "document_version": best.document_version,
            "title": best.title,
            "heading": best.heading,
            "similarity": round(best.similarity, 4),
            "url": f"/passages/{best.chunk_id}/",
        }
        entry = await cache_store(
            question=question,
            answer=f"{best.text} [1]",
            sources=[source],
            tier="small",
            session="bench-load",
            score=1.0,
            check_yes=1.0,
        )
        if entry is not None:
            await sync_to_async(cache_approve)(entry_ids=[entry])
            stored.append(question)
    return stored


async def baseline(url: str, count: int) -> dict:
    """One socket at a time, nothing else running."""
    ttfd = []
    for n in range(count):
        run = await ask(url, CACHED[n % len(CACHED)], None)
        if run["cached"] and run["ttfd_ms"] is not None:
            ttfd.append(run["ttfd_ms"])
    return percentiles(ttfd)


async def load(args: argparse.Namespace, url: str, server_pid: int | None) -> dict:
    """The load phase; its figures."""
    tally = Tally()
    stop = asyncio.Event()
    rss_before = rss_kib(server_pid)
    started = time.perf_counter()
    idle = [asyncio.create_task(idle_socket(url, stop, tally)) for _ in range(args.idle)]
    await asyncio.sleep(min(30, 1 + args.idle / 20))  # let them connect before the rest
    streaming = [
        asyncio.create_task(streaming_socket(url, n, stop, tally)) for n in range(args.streaming)
    ]
    cycles_seconds = await cycles(url, args.cycles, args.concurrency, tally)
    remaining = args.minutes * 60 - (time.perf_counter() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)
    rss_after = rss_kib(server_pid)
    stop.set()
    await asyncio.gather(*idle, *streaming)
    return {
        "tally": tally,
        "seconds": round(time.perf_counter() - started, 1),
        "cycles_seconds": round(cycles_seconds, 1),
        "rss_kib": {"before": rss_before, "after": rss_after},
    }


def stored_ids(ids: list[int]) -> int:
    """How many of these message ids are stored (the started stack's database)."""
    from chatbot.models import Message

    found = 0
    for start in range(0, len(ids), 1000):
        found += Message.objects.filter(id__in=ids[start : start + 1000]).count()
    return found


class Stack:
    """A throw-away database, the small model's server and Daphne, stopped together."""

    def __init__(self) -> None:
        from knowledge_db import bench_database

        self.drop = bench_database("bench_load")
        from django.core.management import call_command

        from routing.defaults import tiers_ensure_defaults
        from routing.models import ModelTier
        from routing.servers import wait_until_healthy

        tiers_ensure_defaults()
        call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
        tier = ModelTier.objects.get(name="small")
        model_port = free_port()
        ModelTier.objects.exclude(id=tier.id).update(enabled=False)
        ModelTier.objects.filter(id=tier.id).update(
            base_url=f"http://127.0.0.1:{model_port}/v1", threshold=0.0, enabled=True
        )
        self.env = {
            **os.environ,
            "CHAT_DEFAULT_TIER": "small",
            "CASCADE_START_TIER": "small",
            "CASCADE_SUPPORT_CHECK": "off",
            # Every client here is 127.0.0.1: lift the per-address and per-session limits.
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
            "CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
            # Cached answers are served after one producing session (the bench primes them).
            "CACHE_SHARE_MIN_SESSIONS": "1",
            # The streaming sockets wait on one model slot; the default cap (16 answers at once)
            # would turn the cycles away as `busy` behind them.
            "CHAT_MAX_CONCURRENT_ANSWERS": "64",
        }
        self.logs: list = []
        self.models = self._spawn(
            "models",
            [
                sys.executable,
                "manage.py",
                "serve_models",
                "--serve",
                f"{tier.local_model}={model_port}:{tier.context_window}",
            ],
            self.env,
        )
        self.daphne: subprocess.Popen | None = None
        try:
            wait_until_healthy(f"http://127.0.0.1:{model_port}/v1", timeout=300)
            self.start_daphne({})
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(ROOT / "var" / f"bench_load_{name}.log", "ab")
        self.logs.append(log)
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_daphne(self, extra_env: dict[str, str]) -> None:
        """(Re)start Daphne with run_stack's flags on a new free port."""
        from chatbot.management.commands.run_stack import daphne_command

        self.stop_daphne()
        port = free_port()
        self.daphne = self._spawn(
            "daphne", daphne_command(bind="127.0.0.1", port=port), {**self.env, **extra_env}
        )
        self.url = f"ws://127.0.0.1:{port}/ws/chat/"
        deadline = time.monotonic() + 120
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Daphne did not listen on {port}")

    def stop_daphne(self) -> None:
        if self.daphne is not None and self.daphne.poll() is None:
            self.daphne.terminate()
            try:
                self.daphne.wait(15)
            except subprocess.TimeoutExpired:
                self.daphne.kill()

    def stop(self) -> None:
        """Stop Daphne and the model server (by their own process ids), drop the database."""
        self.stop_daphne()
        self.models.terminate()
        try:
            self.models.wait(15)
        except subprocess.TimeoutExpired:
            self.models.kill()
        for log in self.logs:
            log.close()
        self.drop()


async def compare_db_threads(stack: Stack, threads: str, cycles_n: int, concurrency: int) -> dict:
    """Cycles alone against Daphne with CHAT_DATABASE_THREADS=threads, then the default."""
    out = {}
    for label, env in ((f"threads_{threads}", {"CHAT_DATABASE_THREADS": threads}), ("default", {})):
        stack.start_daphne(env)
        await baseline(stack.url, 6)  # warm: the embedder loads on the first ask
        tally = Tally()
        seconds = await cycles(stack.url, cycles_n, concurrency, tally)
        out[label] = {
            "cycles": cycles_n,
            "concurrency": concurrency,
            "cycles_per_second": round(cycles_n / seconds, 2),
            "ttfd": percentiles(tally.ttfd),
            "cycle": percentiles(tally.cycle_ms),
            "not_complete": tally.errors,
            "refused": tally.refused,
        }
    return out


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--url", help="a running server's chat socket, ws://127.0.0.1:PORT/ws/chat/"
    )
    parser.add_argument("--start", action="store_true", help="start a throw-away stack")
    parser.add_argument("--server-pid", type=int, help="Daphne's pid (with --url) for its memory")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--streaming", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=60, help="single-socket asks")
    parser.add_argument("--compare-db-threads", metavar="N", help="with --start: also N threads")
    parser.add_argument("--compare-cycles", type=int, default=600)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if not args.url and not args.start:
        parser.error("give --start or --url")
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only: the URL must be on 127.0.0.1, localhost or ::1")
    stack = Stack() if args.start else None
    try:
        url = stack.url if stack else args.url
        server_pid = stack.daphne.pid if stack and stack.daphne else args.server_pid
        load_before = os.getloadavg()
        cached = asyncio.run(seed_cache() if stack else prime(url))
        cached = [q for q in cached if asyncio.run(ask(url, q, None, timeout=300))["cached"]]
        if not cached:
            raise SystemExit("no question could be cached: the load needs cached answers")
        CACHED[:] = cached
        single = asyncio.run(baseline(url, args.baseline))
        phase = asyncio.run(load(args, url, server_pid))
        tally: Tally = phase["tally"]
        under_load = percentiles(tally.ttfd)
        rss = phase["rss_kib"]
        growth = (
            round(100 * (rss["after"] - rss["before"]) / rss["before"], 1)
            if rss["before"] and rss["after"]
            else None
        )
        overhead = (
            round(under_load["p95_ms"] - single["p95_ms"], 1)
            if under_load["p95_ms"] is not None and single["p95_ms"] is not None
            else None
        )
        result = {
            "server": "started by the script" if stack else url,
            "minutes": round(phase["seconds"] / 60, 2),
            "idle_sockets": args.idle,
            "streaming_sockets": args.streaming,
            "cycles": args.cycles,
            "cycle_concurrency": args.concurrency,
            "cycles_seconds": phase["cycles_seconds"],
            "cycles_per_second": round(args.cycles / phase["cycles_seconds"], 2),
            "cached_questions": cached,
            "cycles_served_from_cache": tally.cached,
            "cycles_not_from_cache": tally.not_cached,
            "streamed_answers": tally.streamed_answers,
            "dropped_sockets": tally.dropped,
            "acknowledged": len(tally.acked),
            "acknowledged_without_answer_end": tally.no_end,
            "refused": tally.refused,
            "not_complete": tally.errors,
            "ttfd_single_socket": single,
            "ttfd_under_load": under_load,
            "ttfd_p95_overhead_ms": overhead,
            "ttfd_p95_overhead_goal_ms": 300,
            "cycle_time_under_load": percentiles(tally.cycle_ms),
            "server_rss_kib": rss,
            "server_rss_growth_percent": growth,
            "server_rss_growth_goal_percent": 10,
        }
        if stack:
            found = stored_ids(tally.acked)
            result["lost_messages"] = len(tally.acked) - found
            if args.compare_db_threads:
                result["db_threads"] = asyncio.run(
                    compare_db_threads(
                        stack, args.compare_db_threads, args.compare_cycles, args.concurrency
                    )
                )
        result["load_average_1min"] = {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    finally:
        if stack:
            stack.stop()


if __name__ == "__main__":
    main()
