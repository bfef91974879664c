"""Prefill and decode speed of the two llama.cpp runtimes serve_models can run (LOCAL_MODEL_RUNTIME):
the xllamacpp wheel's build and llama-server compiled for this CPU (manage.py build_llama_server).

Both serve the same bundled model through `manage.py serve_models` at once; each round sends the
same grounded prompt (instructions, two passages, a question) to one then the other, with the
prompt cache off, alternating which goes first. Prints JSON: per runtime the median prefill
tokens/s, time to the first token and decode tokens/s, and native/wheel ratios.

    python bench/prefill.py [--model qwen2.5-coder-0.5b] [--rounds 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stack_faults import free_port  # noqa: E402

PASSAGE = (
    "Refunds are paid to the original payment method within 5 to 10 business days after the "
    "returned item reaches our warehouse; store credit is issued at once. Items bought in a "
    "sale can be returned within 14 days, other items within 30 days, unused and with the "
    "receipt. Gift cards and personalised items cannot be returned. "
)
MESSAGES = [
    {
        "role": "system",
        "content": "You are the shop's customer support assistant. Answer the customer's "
        "question using only the numbered passages quoted in their message. Give the shortest "
        "answer that is complete, then cite the passage you used like [1]. If the passages do "
        'not contain the answer, reply exactly: "I don\'t know."',
    },
    {
        "role": "user",
        "content": f"<passages>\n[1] (Returns > Refunds) {PASSAGE}\n[2] (Returns > Sale items) "
        f"{PASSAGE[::-1]}\n</passages>\n\nQuestion: How long do refunds take?",
    },
]


def serve(model: str, runtime: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "LOCAL_MODEL_RUNTIME": runtime}
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--serve", f"{model}={port}:4096:1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def completion(port: int, max_tokens: int) -> dict:
    body = {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, "cache_prompt": False}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args()

    from routing.servers import wait_until_healthy

    ports = {"wheel": free_port(), "native": free_port()}
    servers = {name: serve(args.model, name, port) for name, port in ports.items()}
    try:
        for name, port in ports.items():
            wait_until_healthy(f"http://127.0.0.1:{port}", timeout=180, server=servers[name])
            completion(port, 1)  # warm-up
        runs: dict[str, list[dict]] = {name: [] for name in ports}
        for index in range(args.rounds):
            order = list(ports) if index % 2 == 0 else list(reversed(ports))
            for name in order:
                timings = completion(ports[name], 32)
                runs[name].append(timings)
        summary = {}
        for name, timed in runs.items():
            summary[name] = {
                "prompt_tokens": timed[0]["prompt_n"],
                "prefill_tokens_per_s_p50": round(
                    statistics.median(t["prompt_per_second"] for t in timed), 1
                ),
                "prefill_ms_p50": round(statistics.median(t["prompt_ms"] for t in timed), 1),
                "decode_tokens_per_s_p50": round(
                    statistics.median(t["predicted_per_second"] for t in timed), 1
                ),
            }
        result = {
            "bench": "prefill",
            "model": args.model,
            "rounds": args.rounds,
            "by_runtime": summary,
            "native_over_wheel": {
                key: round(summary["native"][key] / summary["wheel"][key], 3)
                for key in ("prefill_tokens_per_s_p50", "decode_tokens_per_s_p50")
            },
            "load_average_1min": os.getloadavg()[0],
        }
    finally:
        for server in servers.values():
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
