"""Speculative decoding for the large tier: decode speed, time to the full answer, same text.

Usage: python bench/speculative.py [--drafts 0,2,4,8] [--questions 6] [--max-tokens 160]
       python bench/speculative.py --slot-restore qwen2.5-coder-0.5b [--rounds 2]

For each draft count (0: no draft) one `manage.py serve_models --serve qwen2.5-coder-1.5b=PORT`
process is started with LOCAL_MODEL_DRAFT naming the medium model (qwen2.5-coder-0.5b) as its
draft, all loaded side by side. Each question is then asked of every server in turn (the order
rotates per question, so load on the shared machine falls on all alike), greedy (temperature 0),
without streaming: the server's own timings give decode tokens/s and the draft's acceptance.
The prompts are the product's own (chatbot.prompts.build_messages) over the sections of the demo
help-centre document each demo question is about. Prints JSON and saves it to
bench/results/speculative.json, with each server's resident memory and the load average.

--slot-restore probes llama.cpp's saved slot states (not used by the product): a server with
`slot_save_path` answers a topic's question cold and saves its slot; then, per round, it is
restarted twice and asked another question on the same passages, once as it starts and once
after restoring the saved slot: time to the first token of each, the save and restore times
and the file size (bench/results/speculative_slot_restore.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django  # noqa: E402

django.setup()

from cache_latency import free_port  # noqa: E402
from django.conf import settings  # noqa: E402

from chatbot.prompts import build_messages  # noqa: E402
from retrieval.chunking import split_sections  # noqa: E402
from retrieval.ingestion import title_from_markdown  # noqa: E402
from retrieval.search import Passage  # noqa: E402
from routing.servers import wait_until_healthy  # noqa: E402

TARGET = "qwen2.5-coder-1.5b"
DRAFT = "qwen2.5-coder-0.5b"
QUESTIONS = ROOT / "bench" / "data" / "demo_questions.jsonl"
RESULTS = ROOT / "bench" / "results" / "speculative.json"


def document_passages(stem: str, document_id: int) -> list[Passage]:
    """The sections of one demo document as retrieved passages (what its questions are shown)."""
    text = (settings.DEMO_KNOWLEDGE_DIR / f"{stem}.md").read_text(encoding="utf-8")
    title = title_from_markdown(text, stem)
    return [
        Passage(
            chunk_id=document_id * 100 + n,
            document_id=document_id,
            document_version=1,
            title=title,
            heading=section.heading,
            text=section.body.strip(),
            similarity=0.7,
        )
        for n, section in enumerate(split_sections(text))
        if section.body.strip()
    ]


def prompts(count: int) -> list[dict]:
    """The product's messages for the first `count` answerable demo questions, one per document."""
    chosen, seen = [], set()
    for line in QUESTIONS.open():
        row = json.loads(line)
        stem = row.get("passage_id")
        if not row.get("answerable") or not stem or stem in seen:
            continue
        if not (settings.DEMO_KNOWLEDGE_DIR / f"{stem}.md").exists():
            continue
        seen.add(stem)
        passages = document_passages(stem, len(seen))
        messages = build_messages(passages=passages, history=[], question=row["question"])
        chosen.append({"id": row["id"], "question": row["question"], "messages": messages})
        if len(chosen) == count:
            break
    return chosen


class Server:
    """`manage.py serve_models` serving the large model, with or without a draft."""

    def __init__(self, draft_max: int, context: int) -> None:
        self.draft_max = draft_max
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        draft = f"{TARGET}={DRAFT}:{draft_max}" if draft_max else ""
        self.log = (ROOT / "test-output" / f"bench-speculative-{draft_max}.log").open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve_models",
                "--serve",
                f"{TARGET}={self.port}:{context}:1",
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LOCAL_MODEL_DRAFT": draft},
        )
        wait_until_healthy(self.url, timeout=600)
        self.load_s = time.perf_counter() - started

    def memory_mb(self) -> dict[str, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
        return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}

    def ask(self, messages: list[dict], max_tokens: int) -> dict:
        """One greedy answer: wall time, the server's timings and the text."""
        body = {
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
            "cache_prompt": True,
        }
        request = urllib.request.Request(
            f"{self.url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        load = os.getloadavg()[0]
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=900) as response:
            out = json.load(response)
        return {
            "total_s": time.perf_counter() - started,
            "load_1m": load,
            "timings": out.get("timings", {}),
            "text": out["choices"][0]["message"]["content"],
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def summary(runs: list[dict]) -> dict:
    """Medians over the questions for one server."""
    timings = [r["timings"] for r in runs]
    drafted = sum(t.get("draft_n", 0) for t in timings)
    accepted = sum(t.get("draft_n_accepted", 0) for t in timings)
    return {
        "decode_tokens_per_s_p50": round(
            statistics.median(t["predicted_per_second"] for t in timings), 2
        ),
        "full_answer_s_p50": round(statistics.median(r["total_s"] for r in runs), 2),
        "full_answer_s_mean": round(statistics.fmean(r["total_s"] for r in runs), 2),
        "prefill_ms_p50": round(statistics.median(t["prompt_ms"] for t in timings), 1),
        "answer_tokens_mean": round(statistics.fmean(t["predicted_n"] for t in timings), 1),
        "draft_tokens": drafted,
        "draft_accepted": accepted,
        "acceptance": round(accepted / drafted, 3) if drafted else None,
        "load_1m_mean": round(statistics.fmean(r["load_1m"] for r in runs), 2),
    }


SLOT_SERVER = """
import sys, threading, xllamacpp
params = xllamacpp.CommonParams()
params.model.path, params.port = sys.argv[1], int(sys.argv[2])
params.hostnames = ["127.0.0.1"]
params.n_ctx, params.n_parallel, params.kv_unified = 4096, 1, False
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(sys.argv[4])
params.cache_prompt, params.endpoint_slots = True, True
params.slot_save_path = sys.argv[3]  # joined to the file name as is: it must end in "/"
server = xllamacpp.Server(params)
threading.Event().wait()
"""


def slot_restore(model: str, rounds: int, out: Path) -> dict:
    """First-token time after a restart, with and without restoring a saved slot state."""
    from routing.bundled import model_path

    path = model_path(model, settings.MODEL_CACHE_DIR)
    folder = ROOT / "test-output" / "slot-states"
    folder.mkdir(parents=True, exist_ok=True)
    ask = prompts(1)[0]
    system, user = ask["messages"]
    passages = user["content"].rsplit("\n\n", 1)[0]

    def messages(question: str) -> list[dict]:
        return [system, {"role": "user", "content": f"{passages}\n\n{question}"}]

    def post(url: str, route: str, body: dict) -> tuple[float, dict]:
        request = urllib.request.Request(
            f"{url}{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=900) as response:
            return time.perf_counter() - started, json.load(response)

    def first_token(url: str, question: str) -> dict:
        load = os.getloadavg()[0]
        body = {"messages": messages(question), "temperature": 0, "max_tokens": 1}
        seconds, out = post(url, "/v1/chat/completions", body)
        t = out["timings"]
        return {
            "s": round(seconds, 3),
            "prompt_n": t["prompt_n"],
            "cache_n": t.get("cache_n"),
            "load_1m": round(load, 2),
        }

    def start() -> tuple[subprocess.Popen, str]:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SLOT_SERVER,
                str(path),
                str(port),
                f"{folder}/",
                str(settings.LOCAL_MODEL_THREADS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout=600)
        return process, f"http://127.0.0.1:{port}"

    def stop(process: subprocess.Popen) -> None:
        process.terminate()
        process.wait(15)

    result: dict = {"model": model, "question": ask["question"], "rounds": []}
    process, url = start()
    try:
        result["cold"] = first_token(url, f"Question: {ask['question']}")
        seconds, saved = post(url, "/slots/0?action=save", {"filename": "topic.bin"})
        result["save"] = {
            "s": round(seconds, 3),
            "tokens": saved["n_saved"],
            "mb": round(saved["n_written"] / 1e6, 1),
        }
    finally:
        stop(process)
    follow_up = "Question: Can I still return a jacket I wore outside once?"
    for _ in range(rounds):
        row = {}
        process, url = start()
        try:
            row["restarted"] = first_token(url, follow_up)
        finally:
            stop(process)
        process, url = start()
        try:
            seconds, restored = post(url, "/slots/0?action=restore", {"filename": "topic.bin"})
            row["restore_s"] = round(seconds, 3)
            row["restored"] = first_token(url, follow_up)
        finally:
            stop(process)
        result["rounds"].append(row)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    out.write_text(text + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", default="0,4,8", help="draft token counts; 0 is no draft")
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--slot-restore", metavar="MODEL", help="probe saved slot states instead")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.slot_restore:
        slot_restore(
            args.slot_restore, args.rounds, RESULTS.with_name("speculative_slot_restore.json")
        )
        return
    counts = [int(c) for c in args.drafts.split(",")]
    asks = prompts(args.questions)
    servers: list[Server] = []
    try:
        for count in counts:
            servers.append(Server(count, args.context))
        runs: dict[int, list[dict]] = {s.draft_max: [] for s in servers}
        # One warm-up each (first-call allocations), not counted.
        for server in servers:
            server.ask(asks[0]["messages"], 8)
        for i, ask in enumerate(asks):
            order = servers[i % len(servers) :] + servers[: i % len(servers)]
            for server in order:
                runs[server.draft_max].append(server.ask(ask["messages"], args.max_tokens))
        baseline = runs[counts[0]]
        result = {
            "target": TARGET,
            "draft": DRAFT,
            "questions": len(asks),
            "max_tokens": args.max_tokens,
            "threads": settings.LOCAL_MODEL_THREADS,
            "cpus": os.cpu_count(),
            "configs": {},
        }
        for server in servers:
            mine = runs[server.draft_max]
            same = [a["text"] == b["text"] for a, b in zip(mine, baseline, strict=True)]
            result["configs"][f"draft_max={server.draft_max}"] = {
                **summary(mine),
                "load_s": round(server.load_s, 1),
                **server.memory_mb(),
                f"same_text_as_draft_max={counts[0]}": f"{sum(same)}/{len(same)}",
                "differing": [
                    {"id": ask["id"], "this": r["text"], "baseline": b["text"]}
                    for ask, r, b, s in zip(asks, mine, baseline, same, strict=True)
                    if not s
                ],
            }
        result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        for server in servers:
            server.stop()
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
