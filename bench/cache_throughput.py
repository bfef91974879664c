"""Cache hits at scale over the chat socket: one customer's ask-to-`answer.end` time, and cached
answers a second with 50 and 200 sockets asking at once, on one and two Daphne processes.

Usage:
  python bench/cache_throughput.py [--before DIR] [--seconds 20] [--single 60] [--out FILE]
      Starts its own stack: a throw-away database (bench_cache_throughput) with the demo help
      centre and the default tiers, a redis-server (the channel layer of REDIS_URL, so one and
      two processes run the same layer) and Daphne processes (run_stack's flags, free ports);
      everything is stopped and dropped at the end. No model server is started: a hit never
      reaches a model, and an ask that is not a hit counts as an error here.
      --before DIR: also runs the same phases against Daphne started from another source tree
      (e.g. `git archive <commit> | tar -x -C DIR`), same database, same run: before/after.
      --commit-delay-us N: a disk whose flushes are slow. The database's sessions get
      PostgreSQL's commit_delay N (at most 100000) with commit_siblings 0, so every synchronous
      commit waits N microseconds before its flush (commits waiting together still share one
      flush, as on a slow disk); needs a superuser, as the embedded server's.
  python bench/cache_throughput.py --before DIR --alternate N [--seconds 20]
      Only one process with 50 sockets, the two trees in turn (before, after, after, before, ...)
      N times each: answers a second per phase and their medians.
  python bench/cache_throughput.py --profile [--hits 200]
      In-process (no Daphne): where one hit's milliseconds go, step by step, with the number of
      SQL statements and their time.

The cache is seeded as bench/load.py does (each question's best passage, cited, stored through
the cache service) and every entry is APPROVED as an admin would: entries are served to other
sessions only once shared, and every socket here is a new session. Each socket asks the cached
questions one after another (a `client_id` per ask, no conversation id: a first turn, as the
page sends it); two processes get alternate sockets (no proxy in front). Prints JSON; the load
average is given beside each phase (this machine's 2 cores are shared).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cache_latency import Stack as CacheLatencyStack  # noqa: E402
from cache_latency import free_port, percentiles  # noqa: E402
from load import CACHED, seed_cache  # noqa: E402

SERVER_ENV = {
    # Every client here is 127.0.0.1, and each socket asks many times a minute.
    "CHAT_RATE_LIMIT_PER_MINUTE": "1000000",
    "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
    "CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
    # 200 sockets asking at once: the default cap (16 answers at once) would say `busy`.
    "CHAT_MAX_CONCURRENT_ANSWERS": "1000",
}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# --- Over the socket --------------------------------------------------------------------------


async def ask_on(ws: Any, question: str) -> dict[str, Any]:
    """One ask on an open socket; milliseconds from sending it to `answer.end` (or an error)."""
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "ask", "text": question, "client_id": uuid.uuid4().hex}))
    answering, error = False, None
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "answer.start":
            answering = True
        elif frame["type"] == "answer.end":
            return {
                "ms": (time.perf_counter() - started) * 1000,
                "ok": frame.get("status") == "complete" and bool(frame.get("cached")),
                "status": error or (frame.get("status") if frame.get("cached") else "not_cached"),
            }
        elif frame["type"] == "error":
            if answering:
                # An answer that fails still ends with its answer.end: read up to it, or the next
                # ask on this socket would take it for its own.
                error = frame["code"]
                continue
            return {
                "ms": (time.perf_counter() - started) * 1000,
                "ok": False,
                "status": frame["code"],
            }


def _connect(url: str) -> Any:
    # The server checks the origin's host and port against its own.
    origin = f"http://{urlsplit(url).netloc}"
    return websockets.connect(url, origin=origin, max_size=2**22, open_timeout=60)


async def single_customer(url: str, count: int) -> dict[str, Any]:
    """One customer at a time, a fresh socket (a new session) per ask: ask to `answer.end`."""
    times, failed = [], defaultdict(int)
    for n in range(count):
        async with _connect(url) as ws:
            run = await ask_on(ws, CACHED[n % len(CACHED)])
        if run["ok"]:
            times.append(run["ms"])
        else:
            failed[run["status"]] += 1
    return {**percentiles(times), "failed": dict(failed)}


async def many_sockets(urls: list[str], sockets: int, seconds: float) -> dict[str, Any]:
    """`sockets` open sockets (alternating over the urls), each asking cached questions one
    after another for `seconds`: cached answers a second and ask-to-end percentiles."""
    # Opened 20 at a time, each tried up to three times: a storm of 200 handshakes on a loaded
    # machine is refused now and then, and the phase measures asking, not connecting.
    gate = asyncio.Semaphore(20)
    refused_connects = 0

    async def open_socket(n: int) -> Any:
        nonlocal refused_connects
        async with gate:
            for _ in range(3):
                try:
                    return await _connect(urls[n % len(urls)])
                except (OSError, TimeoutError, websockets.WebSocketException):
                    refused_connects += 1
                    await asyncio.sleep(1)
        return None

    opened = await asyncio.gather(*(open_socket(n) for n in range(sockets)))
    connections = [ws for ws in opened if ws is not None]
    times: list[float] = []
    failed: dict[str, int] = defaultdict(int)
    # The window opens once every socket has had its first answer (lanes and pools filled, and
    # every socket asking): on a loaded machine one round of 200 asks can outlast a short window.
    warm = asyncio.Event()
    first_answers = 0
    window = {"start": float("inf"), "end": float("inf")}

    def first_answer() -> None:
        nonlocal first_answers
        first_answers += 1
        if first_answers == len(connections):
            warm.set()

    async def asker(n: int, ws: Any) -> None:
        asked = n
        while True:
            try:
                run = await ask_on(ws, CACHED[asked % len(CACHED)])
            except (OSError, websockets.WebSocketException):
                failed["socket_closed"] += 1
                if asked == n:
                    first_answer()  # a socket lost before its first answer holds nobody up
                return
            asked += 1
            if asked == n + 1:
                first_answer()
            now = time.perf_counter()
            if not window["start"] <= now <= window["end"]:
                continue
            if run["ok"]:
                times.append(run["ms"])
            else:
                failed[run["status"]] += 1

    load_before = load_average()
    tasks = [asyncio.create_task(asker(n, ws)) for n, ws in enumerate(connections)]
    await warm.wait()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    load_window = load_average()
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = seconds
    for ws in connections:
        try:
            await ws.close()
        except (OSError, websockets.WebSocketException):
            pass
    return {
        "sockets": sockets,
        "sockets_open": len(connections),
        "connect_attempts_refused": refused_connects,
        "processes": len(urls),
        "seconds": round(elapsed, 1),
        "answers_per_second": round(len(times) / elapsed, 1),
        "ask_to_end": percentiles(times),
        "failed": dict(failed),
        "load_average_1min": {
            "before": load_before,
            "window_start": load_window,
            "after": load_average(),
        },
    }


# --- The stack --------------------------------------------------------------------------------


class Stack:
    """A throw-away database with approved cache entries, a redis-server, Daphne processes."""

    def __init__(self, commit_delay_us: int = 0) -> None:
        from knowledge_db import bench_database

        self.drop = bench_database("bench_cache_throughput")
        if commit_delay_us:
            _slow_flushes("bench_cache_throughput", commit_delay_us)
        from django.core.management import call_command

        from routing.defaults import tiers_ensure_defaults

        tiers_ensure_defaults()
        call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
        self.cached = asyncio.run(seed_cache())
        if not self.cached:
            raise SystemExit("no question could be cached")
        CACHED[:] = self.cached
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Any] = []
        self.daphnes: list[subprocess.Popen] = []
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        port = free_port()
        self.redis = self._spawn(
            "redis", [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", ""], {}
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        CacheLatencyStack._wait_port(port)

    def _spawn(self, name: str, argv: list[str], env: dict, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(ROOT / "var" / f"bench_cache_throughput_{name}.log", "ab")
        self.logs.append(log)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_daphnes(self, count: int, tree: Path) -> list[str]:
        """`count` Daphne processes running the code of `tree`; their socket URLs."""
        from chatbot.management.commands.run_stack import daphne_command

        self.stop_daphnes()
        env = {
            **os.environ,
            **SERVER_ENV,
            "REDIS_URL": self.redis_url,
            # The other tree's settings keep this checkout's var/ (secret key, model files).
            "CHATBOT_VAR_DIR": os.environ.get("CHATBOT_VAR_DIR", str(ROOT / "var")),
            "PYTHONPATH": str(tree),
        }
        urls = []
        for _ in range(count):
            port = free_port()
            argv = daphne_command(bind="127.0.0.1", port=port)
            self.daphnes.append(self._spawn(f"daphne_{port}", argv, env, cwd=tree))
            CacheLatencyStack._wait_ready(port)
            urls.append(f"ws://127.0.0.1:{port}/ws/chat/")
        return urls

    def stop_daphnes(self) -> None:
        for proc in self.daphnes:
            _stop(proc)
        self.daphnes = []

    def stop(self) -> None:
        """Stop what it started (by their own process ids), drop the database."""
        for proc in self.procs:
            _stop(proc)
        for log in self.logs:
            log.close()
        self.drop()


def _slow_flushes(database: str, commit_delay_us: int) -> None:
    """Every new session of `database` waits commit_delay_us before each commit's flush."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{database}" SET commit_delay = {int(commit_delay_us)}')
        cursor.execute(f'ALTER DATABASE "{database}" SET commit_siblings = 0')
    connection.close()  # this process's next connection gets them too


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def tree_phases(stack: Stack, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every phase against one source tree."""
    out: dict[str, Any] = {"tree": str(tree)}
    urls = stack.start_daphnes(1, tree)
    await single_customer(urls[0], 6)  # the first asks load the embedder and the guard
    load_before = load_average()
    out["single_customer"] = await single_customer(urls[0], args.single)
    out["single_customer"]["load_average_1min"] = {"before": load_before, "after": load_average()}
    for processes in (1, 2):
        urls = stack.start_daphnes(processes, tree)
        for url in urls:
            await single_customer(url, 6)
        for sockets in (50, 200):
            key = f"processes_{processes}_sockets_{sockets}"
            out[key] = await many_sockets(urls, sockets, args.seconds)
            # Progress on stderr: a long run cut short still leaves its figures.
            print(json.dumps({"tree": str(tree), key: out[key]}), file=sys.stderr, flush=True)
    stack.stop_daphnes()
    return out


def alternate(stack: Stack, before: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One process, 50 sockets, the trees in turn (ABBA): this machine's speed drifts within
    minutes, so a comparison holds only between phases run side by side."""
    order = [("before", before), ("after", ROOT)]
    phases: list[dict[str, Any]] = []
    for n in range(args.alternate * 2):
        label, tree = order[(n + n // 2) % 2]
        urls = stack.start_daphnes(1, tree)
        asyncio.run(single_customer(urls[0], 6))  # the first asks load the embedder and guard
        phase = asyncio.run(many_sockets(urls, 50, args.seconds))
        phases.append({"label": label, **phase})
        print(json.dumps(phases[-1]), file=sys.stderr, flush=True)
    stack.stop_daphnes()
    rates = {
        label: [p["answers_per_second"] for p in phases if p["label"] == label]
        for label, _ in order
    }
    return {
        "alternated": {"processes": 1, "sockets": 50, "seconds": args.seconds},
        "commit_delay_us": args.commit_delay_us,
        "trees": {"before": str(before), "after": str(ROOT)},
        "answers_per_second": {
            label: {"runs": values, "median": statistics.median(values)}
            for label, values in rates.items()
        },
        "phases": phases,
    }


# --- In-process profile -----------------------------------------------------------------------


class Steps:
    """Wall time per named step, summed over the hits profiled."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        self.ms[name] += seconds * 1000
        self.calls[name] += 1

    def wrap(self, owner: Any, attribute: str, name: str | None = None) -> None:
        """Time every call of owner.attribute (sync or async) under `name`."""
        original = inspect.getattr_static(owner, attribute)
        label = name or attribute
        if type(original).__name__.endswith("SyncToAsync") and isinstance(owner, type):
            # A method wrapped by database_sync_to_async: bind it to the instance first.

            async def timed_method(instance: Any, *args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original.__get__(instance, owner)(*args, **kwargs)
                finally:
                    self.add(label, time.perf_counter() - started)

            setattr(owner, attribute, timed_method)
        elif asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.add(label, time.perf_counter() - started)

            setattr(owner, attribute, timed_async)
        else:

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.add(label, time.perf_counter() - started)

            setattr(owner, attribute, timed)


def profile(hits: int) -> dict[str, Any]:
    """Where one hit's milliseconds go, in-process (WebsocketCommunicator, no Daphne)."""
    from knowledge_db import bench_database

    os.environ.update(SERVER_ENV)
    drop = bench_database(f"bench_cache_profile_{os.getpid()}")  # two trees may profile at once
    try:
        from django.core.management import call_command

        from routing.defaults import tiers_ensure_defaults

        tiers_ensure_defaults()
        call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
        cached = asyncio.run(seed_cache())
        return asyncio.run(_profile(hits, cached))
    finally:
        drop()


async def _profile(hits: int, cached: list[str]) -> dict[str, Any]:
    from channels.testing import WebsocketCommunicator
    from django.db.backends import utils

    import chatbot.consumers as consumers
    import chatbot.pipeline as pipeline
    import retrieval.cache as cache
    from chatbot.asgi import application

    steps = Steps()
    sql: dict[str, list[float]] = defaultdict(list)
    execute = utils.CursorWrapper._execute

    def timed_execute(self: Any, sql_text: str, params: Any, *rest: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(self, sql_text, params, *rest)
        finally:
            words = " ".join(sql_text.split()[:4])[:60]
            sql[words].append((time.perf_counter() - started) * 1000)

    utils.CursorWrapper._execute = timed_execute
    steps.wrap(consumers.ratelimit, "rate_allow")
    steps.wrap(consumers.ChatConsumer, "_accept_question")
    steps.wrap(pipeline, "conversation_turns")
    steps.wrap(pipeline, "question_rewrite")
    steps.wrap(pipeline, "adetect_language")
    steps.wrap(pipeline.answer_cache, "cache_lookup")
    steps.wrap(cache, "_question_vector", "  cache_lookup: question vector")
    steps.wrap(cache, "_lookup_sync", "  cache_lookup: query + guard + hit row (thread)")
    steps.wrap(cache, "guard_check", "    guard_check")
    steps.wrap(pipeline, "cascade_tiers")
    steps.wrap(pipeline, "arelevance_floors")
    steps.wrap(pipeline, "_store", "_store (answer row, books, totals)")
    steps.wrap(pipeline, "_route_observe", "  _route_observe (thread)")
    steps.wrap(pipeline, "_conversation_totals_sync", "  conversation totals (thread)")

    frames: dict[str, list[float]] = defaultdict(list)
    headers = [(b"origin", b"http://127.0.0.1")]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    served = 0
    wall = []
    for n in range(hits + 10):
        if n == 10:  # the first asks load the embedder and the guard
            steps.ms.clear(), steps.calls.clear(), sql.clear(), frames.clear()
        started = time.perf_counter()
        await ws.send_json_to(
            {"type": "ask", "text": cached[n % len(cached)], "client_id": uuid.uuid4().hex}
        )
        while True:
            frame = await ws.receive_json_from(timeout=60)
            frames[frame["type"]].append((time.perf_counter() - started) * 1000)
            if frame["type"] in ("answer.end", "error"):
                break
        if n >= 10:
            wall.append((time.perf_counter() - started) * 1000)
            served += bool(frame.get("cached"))
    await ws.disconnect()
    utils.CursorWrapper._execute = execute
    per_hit = {name: round(ms / hits, 3) for name, ms in steps.ms.items()}
    statements = {
        words: {"per_hit": round(len(ms) / hits, 2), "ms_per_hit": round(sum(ms) / hits, 3)}
        for words, ms in sorted(sql.items(), key=lambda kv: -sum(kv[1]))
    }
    return {
        "hits": hits,
        "served_from_cache": served,
        "ask_to_end": percentiles(wall),
        "frame_arrival_p50_ms": {k: percentiles(v)["p50_ms"] for k, v in frames.items()},
        "step_ms_per_hit": dict(sorted(per_hit.items(), key=lambda kv: -kv[1])),
        "sql_statements_per_hit": round(sum(len(v) for v in sql.values()) / hits, 2),
        "sql_ms_per_hit": round(sum(sum(v) for v in sql.values()) / hits, 3),
        "sql": statements,
        "load_average_1min": load_average(),
    }


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="another source tree to measure first")
    parser.add_argument("--seconds", type=float, default=20.0, help="each many-socket phase")
    parser.add_argument("--single", type=int, default=60, help="single-customer asks")
    parser.add_argument("--profile", action="store_true", help="in-process step profile")
    parser.add_argument("--hits", type=int, default=200, help="hits profiled")
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        help="with --before: only one process and 50 sockets, the two trees in turn "
        "(before, after, after, before, ...) this many times each",
    )
    parser.add_argument(
        "--commit-delay-us",
        type=int,
        default=0,
        help="make every synchronous commit wait this long before its flush (a slow disk)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.profile:
        result: dict[str, Any] = {"profile": profile(args.hits)}
    elif args.alternate:
        if not args.before:
            parser.error("--alternate needs --before")
        stack = Stack(args.commit_delay_us)
        try:
            result = alternate(stack, args.before.resolve(), args)
        finally:
            stack.stop()
    else:
        stack = Stack(args.commit_delay_us)
        try:
            result = {
                "note": (
                    "cache entries seeded and approved as an admin would (served to every new "
                    "session); every ask a new conversation on an open socket; Redis channel "
                    "layer for one and two processes; no proxy: sockets alternate over ports"
                ),
                "cached_questions": stack.cached,
                "commit_delay_us": args.commit_delay_us,
                "runs": [],
            }
            trees = ([args.before.resolve()] if args.before else []) + [ROOT]
            for tree in trees:
                label = "before" if args.before and tree == trees[0] else "after"
                result["runs"].append(
                    {"label": label, **asyncio.run(tree_phases(stack, tree, args))}
                )
        finally:
            stack.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
