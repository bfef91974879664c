"""Help-centre traffic against the running stack: time to first words for returning and new
topics, cache hits, cost per question and the share of each tier.

Usage:
  python bench/traffic.py --url ws://127.0.0.1:8000/ws/chat/ [--questions 30]
      Against a running server (`make run`); its rate limits must allow the asks, and only with
      CHAT_SHOW_DETAILS=1 do its frames name the tier and the cost (else they count as "none").
  python bench/traffic.py --start --slots 1,4 [--questions 16]
  python bench/traffic.py --start --variant document:PROMPT_PASSAGE_ORDER=document \
      --variant rank:PROMPT_PASSAGE_ORDER=rank [--questions 40]
      Each variant (a slot count, or a name with environment settings) gets its own stack in one
      run: a throw-away database with the demo help centre (bench_traffic, copied once per
      variant), only the medium tier (threshold 0, so its answers are stored and paraphrases can
      hit), `manage.py run_stack` on free ports with the variant's settings. All stacks run at
      once and each question is asked of every stack in turn (the first stack alternates), so a
      shared machine's load falls on the variants alike. Everything is stopped and the databases
      dropped at the end.

  python bench/traffic.py --start --variant before:CODE=../old-checkout --variant after:
      CODE=PATH runs that variant's stack from another checkout of the project (same migrations):
      two versions of the code, measured in the same minutes.

  python bench/traffic.py --start --variant one:LOCAL_MODEL_PARALLEL=1 --customers 4
      Every other round asks 4 questions at once, each on its own socket: first words of
      answers asked alone and with 3 others, in the same run (first_words_by_customers_at_once).

  python bench/traffic.py --start --restart --variant cold:LOCAL_MODEL_WARM_PROMPTS=0 \
      --variant warm:LOCAL_MODEL_WARM_PROMPTS=16 [--questions 40]
      After the sequence every stack is stopped and started again at once (same database), and
      once its model servers' warm-up has ended each topic asked is asked a question it was not
      asked yet: first words of returning topics after a restart (after_restart).

  python bench/traffic.py --prompts-only --tier small --cache-reuse 256,64 [--questions 40]
      No stack: the product's own prompts for the same sequence (retrieval and tier_prompt on a
      throw-away database) sent straight to a llama.cpp server of the tier's model, one server
      per llama.cpp n_cache_reuse value (chunks of at least that many tokens are reused from
      anywhere in the slot's cached prompt by shifting them, not only the shared prefix), and
      per PROMPT_PASSAGE_ORDER (--orders). Prints the tokens llama.cpp prefilled and reused.

Besides first words, each generated answer reports what llama.cpp prefilled and reused (its
/metrics counters before and after the question: with --start, or --metrics for --url), and how
many of its quoted passages (answer.end sources) any earlier question of the run had quoted: a
prefix cache can skip at most those, so it bounds what prompt reuse can save.

The workload (seeded): topics are the demo documents in bench/data/traffic_questions.jsonl,
drawn with Zipf-like weights 1/rank^s; a topic is never drawn twice in a row, so a returning
topic always has other questions in between. A share of asks are paraphrases of a question
already answered (cache hits when the cache accepts them). Time to first words: `ask` to the
first `answer.delta`. Prints JSON; on a shared machine read it with the load average beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunparse

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cache_latency import Stack as CacheLatencyStack  # noqa: E402
from cache_latency import free_port, percentiles  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "traffic_questions.jsonl"


def workload(count: int, *, seed: int, zipf_s: float, paraphrase_share: float) -> list[dict]:
    """The ask sequence: {question, document, kind} with kind new / returning / paraphrase."""
    rows = [json.loads(line) for line in QUESTIONS.open() if line.strip()]
    originals: dict[str, list[str]] = {}
    paraphrases: dict[str, str] = {}
    document_of = {row["question"]: row["document"] for row in rows}
    for row in rows:
        if row.get("paraphrase_of"):
            paraphrases[row["paraphrase_of"]] = row["question"]
        else:
            originals.setdefault(row["document"], []).append(row["question"])
    rng = random.Random(seed)
    topics = list(originals)
    rng.shuffle(topics)  # which document is popular is part of the seed
    weights = [1 / (rank + 1) ** zipf_s for rank in range(len(topics))]
    asked: list[str] = []
    seen_topics: set[str] = set()
    sequence: list[dict] = []
    previous = None
    while len(sequence) < count:
        topic = rng.choices(topics, weights)[0]
        if topic == previous:
            continue
        ready = [q for q in asked if q in paraphrases and document_of[q] == topic]
        if ready and rng.random() < paraphrase_share:
            original = ready[0]
            sequence.append(
                {"question": paraphrases.pop(original), "document": topic, "kind": "paraphrase"}
            )
        elif originals[topic]:
            question = originals[topic].pop(0)
            asked.append(question)
            kind = "returning" if topic in seen_topics else "new"
            sequence.append({"question": question, "document": topic, "kind": kind})
        else:
            continue
        seen_topics.add(topic)
        previous = topic
    return sequence


def after_restart(sequence: list[dict]) -> list[dict]:
    """Questions for a restarted stack: for each topic the sequence asked, the most asked first,
    its next question the sequence did not ask (kind after_restart): a returning topic whose
    earlier prompts only the restarted servers' warm-up can have put back in their caches."""
    rows = [json.loads(line) for line in QUESTIONS.open() if line.strip()]
    asked = {s["question"] for s in sequence}
    counts = Counter(s["document"] for s in sequence)
    out = []
    for topic, _ in counts.most_common():
        left = [
            r["question"]
            for r in rows
            if r["document"] == topic and not r.get("paraphrase_of") and r["question"] not in asked
        ]
        if left:
            out.append({"question": left[0], "document": topic, "kind": "after_restart"})
    return out


async def ask(url: str, question: str) -> dict:
    """One question on a fresh socket: first words, answer.end, tier, cost."""
    origin = f"http://{urlsplit(url).netloc}"
    async with websockets.connect(url, origin=origin, max_size=2**22) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "ask", "text": question}))
        out: dict = {}
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 600))
            now = (time.perf_counter() - started) * 1000
            if frame["type"] == "answer.start":
                out["start_tier"] = frame.get("tier")
            elif frame["type"] == "answer.delta":
                out.setdefault("first_words_ms", round(now, 1))
            elif frame["type"] in ("answer.end", "error"):
                out.update(
                    end_ms=round(now, 1),
                    type=frame["type"],
                    cached=bool(frame.get("cached")),
                    # The end frame names the tier that answered; the start frame the first one
                    # tried (all the end frame has when the stored message lacks it).
                    tier="cache"
                    if frame.get("cached")
                    else frame.get("tier") or out.get("start_tier"),
                    cost=frame.get("cost") or 0.0,
                    abstained=frame.get("abstained"),
                    code=frame.get("code"),
                    tokens_in=(frame.get("usage") or {}).get("tokens_in"),
                    chunks=[s["chunk_id"] for s in frame.get("sources") or [] if "chunk_id" in s],
                )
                return out


def llama_counters(metrics_url: str | None) -> dict[str, float]:
    """llama.cpp's prompt counters from its /metrics (tokens prefilled, tokens reused from cache,
    seconds spent prefilling)."""
    if not metrics_url:
        return {}
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    names = "prompt_tokens_total|prompt_tokens_cached_total|prompt_seconds_total"
    found = dict(re.findall(rf"^llamacpp:({names}) (\S+)", text, re.M))
    return {name: float(value) for name, value in found.items()}


async def ask_measured(url: str, question: str, metrics_url: str | None) -> dict:
    """ask(), with the model server's prefilled and reused tokens for this question."""
    before = await asyncio.to_thread(llama_counters, metrics_url)
    out = await ask(url, question)
    after = await asyncio.to_thread(llama_counters, metrics_url)
    if before and after:
        out["prefilled_tokens"] = int(after["prompt_tokens_total"] - before["prompt_tokens_total"])
        out["reused_tokens"] = int(
            after.get("prompt_tokens_cached_total", 0) - before.get("prompt_tokens_cached_total", 0)
        )
        if "prompt_seconds_total" in before and "prompt_seconds_total" in after:
            seconds = after["prompt_seconds_total"] - before["prompt_seconds_total"]
            out["prefill_ms"] = round(seconds * 1000, 1)
    return out


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def rounds(sequence: list[dict], customers: int) -> list[list[dict]]:
    """The sequence in rounds: one question alone, then `customers` asked at once, and so on
    (with customers 1, every round is one question)."""
    out, index, alone = [], 0, True
    while index < len(sequence):
        size = 1 if alone or customers <= 1 else customers
        out.append(sequence[index : index + size])
        index += size
        alone = not alone
    return out


async def replay(
    targets: list[tuple[str, str, str | None]], sequence: list[dict], customers: int = 1
) -> dict:
    """Ask the sequence of every (name, socket url, metrics url) in turn; a summary per name.

    With customers > 1 every other round asks that many questions at once (each on its own
    socket), so first words alone and with company are timed in the same minutes."""
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    load_before = os.getloadavg()[0]
    for index, group in enumerate(rounds(sequence, customers)):
        # The stack asked first alternates, so neither always finds the machine fresher.
        for name, url, metrics_url in targets if index % 2 == 0 else targets[::-1]:
            if len(group) == 1:
                answers = [await ask_measured(url, group[0]["question"], metrics_url)]
            else:
                # Prefill counters cannot be told apart between questions that run together.
                answers = await asyncio.gather(*(ask(url, item["question"]) for item in group))
            for item, answer in zip(group, answers, strict=True):
                runs[name].append({**item, **answer, "together": len(group)})
                # Progress, so that a run cut short still says what it measured.
                print(json.dumps({"variant": name, **runs[name][-1]}), file=sys.stderr, flush=True)
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return {
        name: {**summarise(rs), "load_average_1min": load, "runs": rs} for name, rs in runs.items()
    }


def summarise(runs: list[dict]) -> dict:
    """First words, prefill and the passages an earlier question shared, by kind of question."""
    answered = [r for r in runs if r["type"] == "answer.end"]
    generated = [r for r in answered if not r["cached"] and "first_words_ms" in r]
    hits = [r for r in answered if r["cached"]]
    tiers = Counter(r["tier"] or "none" for r in answered)
    quoted: list[set[int]] = []
    for run in runs:
        chunks = set(run.get("chunks") or [])
        if run["type"] == "answer.end" and not run["cached"] and chunks:
            run["passages_shared_with_earlier"] = max((len(chunks & q) for q in quoted), default=0)
            quoted.append(chunks)
    out: dict = {"questions": len(runs), "errors": len(runs) - len(answered)}
    for kind, label in (
        ("returning", "returning_topic"),
        ("new", "new_topic"),
        # Mostly the same passages as an earlier question: what full reuse gives.
        ("paraphrase", "paraphrase"),
        # A returning topic's first question after the stack restarted (--restart).
        ("after_restart", "after_restart"),
    ):
        mine = [r for r in generated if r["kind"] == kind]
        out[f"first_words_{label}"] = percentiles([r["first_words_ms"] for r in mine])
        measured = [r for r in mine if "prefilled_tokens" in r]
        out[f"prefill_{label}"] = {
            "n": len(measured),
            "prompt_tokens_p50": median([r["tokens_in"] for r in measured if r.get("tokens_in")]),
            "prefilled_tokens_p50": median([r["prefilled_tokens"] for r in measured]),
            "reused_tokens_p50": median([r["reused_tokens"] for r in measured]),
        }
        timed = [r for r in measured if "prefill_ms" in r]
        if timed:
            # What the model server spent prefilling, and the rest of the wait for first words
            # (the stack's own steps, the first decoded token, the frames on the way).
            out[f"prefill_{label}"]["prefill_ms_p50"] = median([r["prefill_ms"] for r in timed])
            out[f"prefill_{label}"]["outside_prefill_ms_p50"] = median(
                [round(r["first_words_ms"] - r["prefill_ms"], 1) for r in timed]
            )
        out[f"passages_shared_with_earlier_{label}"] = dict(
            sorted(
                Counter(
                    r["passages_shared_with_earlier"]
                    for r in mine
                    if "passages_shared_with_earlier" in r
                ).items()
            )
        )
    together = sorted({r.get("together", 1) for r in runs})
    if len(together) > 1:
        # Generated answers only: how much a customer waits longer when others ask at once.
        out["first_words_by_customers_at_once"] = {
            str(n): percentiles(
                [r["first_words_ms"] for r in generated if r.get("together", 1) == n]
            )
            for n in together
        }
    out.update(
        cache_hit_ask_to_end=percentiles([r["end_ms"] for r in hits]),
        paraphrases_asked=sum(r["kind"] == "paraphrase" for r in runs),
        paraphrases_hit=sum(r["kind"] == "paraphrase" and r["cached"] for r in runs),
        cost_per_question=round(sum(r["cost"] for r in answered) / max(1, len(answered)), 6),
        tier_share={t: round(n / max(1, len(answered)), 3) for t, n in tiers.items()},
    )
    return out


def compared(by_variant: dict) -> dict:
    """Each variant's first-words p50 against the first variant's (the baseline) in this run."""
    names = list(by_variant)
    base = by_variant[names[0]]
    out = {}
    for name in names[1:]:
        row = {}
        for label in ("returning_topic", "new_topic", "after_restart"):
            mine, theirs = by_variant[name][f"first_words_{label}"], base[f"first_words_{label}"]
            if mine["p50_ms"] and theirs["p50_ms"]:
                row[f"first_words_{label}_p50_ms"] = {
                    "baseline": theirs["p50_ms"],
                    "variant": mine["p50_ms"],
                    "change": round(mine["p50_ms"] / theirs["p50_ms"] - 1, 3),
                }
        out[f"{name} vs {names[0]}"] = row
    return out


def database_copy(url: str, template: str, name: str) -> str:
    """A new database `name` copied from `template` on the server of `url`; returns its URL."""
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # A template must have no other session: the set-up's threads may still hold one.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [template],
        )
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def database_drop(url: str) -> None:
    """Drop the database of `url` (a variant's copy)."""
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


class Stack:
    """`manage.py run_stack` on free ports with the medium tier only, on a variant's database."""

    def __init__(
        self,
        name: str,
        database_url: str,
        settings: dict[str, str],
        max_answer_tokens: int | None,
        timeout: int | None,
    ) -> None:
        import psycopg

        from routing.models import ModelTier

        self.name, self.database_url = name, database_url
        model_port, self.web_port = free_port(), free_port()
        update = {"base_url": f"http://127.0.0.1:{model_port}/v1", "threshold": 0.0}
        if max_answer_tokens:
            update["max_answer_tokens"] = max_answer_tokens
        if timeout:
            update["timeout_seconds"] = timeout
        table = ModelTier._meta.db_table
        columns = ", ".join(f"{column} = %s" for column in update)
        # This variant's own copy of the database: the bench process's ORM points at the template.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET enabled = (name = 'medium')")
            conn.execute(
                f"UPDATE {table} SET {columns} WHERE name = 'medium'", list(update.values())
            )
        settings = dict(settings)
        code = Path(settings.pop("CODE", ROOT)).resolve()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "LOCAL_MODEL_PARALLEL": "1",
            "CHAT_RATE_LIMIT_PER_MINUTE": "100000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "100000",
            # Customers' frames carry no tier or cost otherwise.
            "CHAT_SHOW_DETAILS": "1",
            **settings,
        }
        if timeout:
            env["CASCADE_DEADLINE_SECONDS"] = str(timeout)
        self.metrics_url = f"http://127.0.0.1:{model_port}/metrics"
        self.model_port, self.code, self.env = model_port, code, env
        label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)
        self.log_path = ROOT / "var" / f"bench_traffic_{label}.log"
        self.log = open(self.log_path, "wb")
        self._spawn()
        self._wait()
        self.url = f"ws://127.0.0.1:{self.web_port}/ws/chat/"

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_stack", "--port", str(self.web_port)],
            cwd=self.code,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def _wait(self) -> None:
        from routing.servers import wait_until_healthy

        try:
            wait_until_healthy(f"http://127.0.0.1:{self.model_port}/v1", timeout=600)
            CacheLatencyStack._wait_ready(self.web_port, timeout=300)
        except BaseException:
            self.stop()
            raise

    def respawn(self) -> None:
        """Start the stopped stack again on the same ports and database (see warmed)."""
        self.log = open(self.log_path, "ab")
        self.log_offset = self.log_path.stat().st_size
        self._spawn()

    def warmed(self) -> float:
        """After respawn: until Daphne is ready and run_stack says "model servers warmed";
        returns the seconds from readiness to the end of the warm-up."""
        self._wait()
        ready = time.monotonic()
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                if b"model servers warmed" in log.read():
                    return round(time.monotonic() - ready, 1)
            if self.proc.poll() is not None or time.monotonic() - ready > 900:
                raise RuntimeError(f"{self.name}: the model servers' warm-up did not end")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to run_stack (our own child), which stops its children."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


SERVER_CODE = """
import signal, sys, time, xllamacpp
model, port, reuse, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
params = xllamacpp.CommonParams()
params.model.path = model
params.hostnames = ["127.0.0.1"]
params.port = port
params.n_ctx = 4096 * slots
params.n_parallel = slots
params.kv_unified = False
params.slot_prompt_similarity = 0.5
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
params.cache_prompt = True
params.n_cache_reuse = reuse
server = xllamacpp.Server(params)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
"""


async def prompts_only(args: argparse.Namespace, sequence: list[dict]) -> dict:
    """The product's prompts for the sequence against llama.cpp servers per cache-reuse value and
    passage order: tokens prefilled and reused per kind of question (no stack, no answers)."""
    from django.conf import settings

    from chatbot import prompts
    from chatbot.pipeline import retrieve, tier_prompt
    from routing.bundled import model_path
    from routing.models import ModelTier
    from routing.servers import wait_until_healthy

    tier = await ModelTier.objects.aget(name=args.tier)
    path = await asyncio.to_thread(model_path, tier.local_model, settings.MODEL_CACHE_DIR)
    retrieved = [await retrieve(question=item["question"]) for item in sequence]
    out: dict = {}
    for reuse in [int(r) for r in args.cache_reuse.split(",")]:
        for order in args.orders.split(","):
            settings.PROMPT_PASSAGE_ORDER = order
            # A new server holds no prompts: nor does the order's memory of what it was sent.
            prompts._SENT.clear()
            prompts._QUOTED.clear()
            port = free_port()
            command = [sys.executable, "-c", SERVER_CODE, str(path), str(port), str(reuse), "1"]
            server = await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                tier.base_url = f"http://127.0.0.1:{port}/v1"
                await asyncio.to_thread(wait_until_healthy, tier.base_url, 300)
                rows = []
                for item, passages in zip(sequence, retrieved, strict=True):
                    prompt = await tier_prompt(
                        tier=tier, passages=passages, turns=[], question=item["question"]
                    )
                    body = {"messages": prompt.messages, "max_tokens": 1, "temperature": 0}
                    timings = await asyncio.to_thread(completion_timings, tier.base_url, body)
                    prompts.prompt_sent(tier.name, prompt.passages)
                    rows.append(
                        {
                            "kind": item["kind"],
                            "prefilled": timings["prompt_n"],
                            "reused": timings.get("cache_n", 0),
                            "prefill_ms": round(timings["prompt_ms"], 1),
                            "chunks": [p.chunk_id for p in prompt.passages],
                        }
                    )
            finally:
                server.terminate()
                await server.wait()
            summary = {}
            for kind in ("returning", "new", "paraphrase"):
                mine = [r for r in rows if r["kind"] == kind]
                summary[kind] = {
                    "n": len(mine),
                    "prefilled_tokens_p50": median([r["prefilled"] for r in mine]),
                    "prefilled_tokens_mean": round(
                        sum(r["prefilled"] for r in mine) / max(1, len(mine)), 1
                    ),
                    "reused_tokens_mean": round(
                        sum(r["reused"] for r in mine) / max(1, len(mine)), 1
                    ),
                    "prefill_ms_p50": median([r["prefill_ms"] for r in mine]),
                }
            out[f"n_cache_reuse={reuse} order={order}"] = {"summary": summary, "rows": rows}
            print(json.dumps({reuse: order, **summary}), file=sys.stderr, flush=True)
    return out


def completion_timings(base_url: str, body: dict) -> dict:
    """llama.cpp's `timings` of one non-streamed completion (prompt_n prefilled, cache_n reused)."""
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())["timings"]


def variants_parse(items: list[str] | None, slots: str) -> list[tuple[str, dict[str, str]]]:
    """(name, environment settings) per --variant NAME:KEY=VALUE[,KEY=VALUE], else per slot count."""
    if not items:
        return [(f"slots={n}", {"LOCAL_MODEL_PARALLEL": n.strip()}) for n in slots.split(",")]
    variants = []
    for item in items:
        name, _, pairs = item.partition(":")
        settings = {}
        # A comma starts a new pair only before an environment name and "=": a value may hold
        # commas itself (LOCAL_MODEL_PARALLEL=medium=4,1).
        for pair in filter(None, (p.strip() for p in re.split(r",(?=[A-Z][A-Z0-9_]*=)", pairs))):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise SystemExit(f"--variant {item!r}: {pair!r} is not KEY=VALUE")
            settings[key] = value
        if not name:
            raise SystemExit(f"--variant {item!r}: give a name before the colon")
        variants.append((name, settings))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a running server's chat socket")
    parser.add_argument("--start", action="store_true", help="start throw-away stacks")
    parser.add_argument("--slots", default="1,4", help="with --start: slot counts to compare")
    parser.add_argument(
        "--variant",
        action="append",
        help="with --start, instead of --slots: NAME:KEY=VALUE[,KEY=VALUE] settings of one stack "
        "(repeat; the first is the baseline)",
    )
    parser.add_argument("--metrics", help="with --url: the model server's /metrics URL")
    parser.add_argument(
        "--prompts-only", action="store_true", help="prompts straight to llama.cpp, no stack"
    )
    parser.add_argument("--tier", default="medium", help="with --prompts-only: whose model")
    parser.add_argument(
        "--cache-reuse", default="256,64", help="with --prompts-only: n_cache_reuse values"
    )
    parser.add_argument(
        "--orders", default="reuse,document", help="with --prompts-only: PROMPT_PASSAGE_ORDERs"
    )
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--zipf", type=float, default=1.4)
    parser.add_argument("--paraphrase-share", type=float, default=0.4)
    parser.add_argument(
        "--max-answer-tokens",
        type=int,
        help="with --start: the medium tier's answer length (shorter runs; first words unchanged)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        help="with --start: the tier's timeout and the answer's deadline in seconds (a loaded "
        "machine prefills slowly; a cut answer is not stored, so its paraphrase cannot hit)",
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=1,
        help="with --start: every other round asks this many questions at once",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="with --start: then restart every stack and ask each topic asked so far a question "
        "it was not asked (first words of returning topics after a restart)",
    )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if sum(map(bool, (args.url, args.start, args.prompts_only))) != 1:
        parser.error("give exactly one of --start, --url or --prompts-only")
    sequence = workload(
        args.questions, seed=args.seed, zipf_s=args.zipf, paraphrase_share=args.paraphrase_share
    )
    result: dict = {
        "bench": "traffic",
        "workload": {
            "questions": args.questions,
            "seed": args.seed,
            "zipf_s": args.zipf,
            "paraphrase_share": args.paraphrase_share,
            "kinds": dict(Counter(s["kind"] for s in sequence)),
        },
    }
    if args.prompts_only:
        from knowledge_db import bench_database

        drop = bench_database("bench_traffic_prompts")
        try:
            from django.core.management import call_command

            from routing.defaults import tiers_ensure_defaults

            tiers_ensure_defaults()
            call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
            result["tier"] = args.tier
            result["by_setting"] = asyncio.run(prompts_only(args, sequence))
        finally:
            drop()
    elif args.url:
        result["server"] = args.url
        result["result"] = asyncio.run(replay([("server", args.url, args.metrics)], sequence))[
            "server"
        ]
    else:
        from knowledge_db import bench_database

        variants = variants_parse(args.variant, args.slots)
        drop = bench_database("bench_traffic")
        copies: list[str] = []
        stacks: list[Stack] = []
        try:
            from django.core.management import call_command
            from django.db import connections

            from routing.defaults import tiers_ensure_defaults

            tiers_ensure_defaults()
            call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
            connections.close_all()
            result["max_answer_tokens"] = args.max_answer_tokens or "tier default"
            result["timeout_seconds"] = args.timeout or "tier default"
            result["variants"] = {name: settings for name, settings in variants}
            for index, (name, settings) in enumerate(variants):
                copies.append(
                    database_copy(
                        os.environ["DATABASE_URL"], "bench_traffic", f"bench_traffic_{index}"
                    )
                )
                stacks.append(
                    Stack(name, copies[-1], settings, args.max_answer_tokens, args.timeout)
                )
            targets = [(s.name, s.url, s.metrics_url) for s in stacks]
            result["customers_at_once"] = args.customers
            result["by_variant"] = asyncio.run(replay(targets, sequence, args.customers))
            if args.restart:
                # All at once, so their warm-ups share the machine alike.
                for stack in stacks:
                    stack.stop()
                for stack in stacks:
                    stack.respawn()
                warm_up = {stack.name: stack.warmed() for stack in stacks}
                again = after_restart(sequence)
                result["after_restart"] = {
                    "questions": len(again),
                    "warm_up_seconds_after_ready": warm_up,
                    "by_variant": asyncio.run(replay(targets, again)),
                }
                if len(variants) > 1:
                    result["after_restart"]["compared"] = compared(
                        result["after_restart"]["by_variant"]
                    )
            if len(variants) > 1:
                result["compared"] = compared(result["by_variant"])
        finally:
            for stack in stacks:
                stack.stop()
            for url in copies:
                database_drop(url)
            drop()
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
