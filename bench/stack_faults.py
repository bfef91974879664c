"""Faults against a real `manage.py run_stack`: recovery after SIGKILL of each child, time to stop
on SIGTERM, and serve_models' stop on SIGTERM while it loads a model. Prints JSON.

Uses the configured database and its enabled tiers (as `make run` would), on free ports:
    .venv/bin/python bench/stack_faults.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def until(condition, timeout: float = 300) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


def main() -> None:
    import django

    django.setup()
    from routing.models import ModelTier
    from routing.servers import process_alive

    tiers = list(ModelTier.objects.filter(enabled=True).exclude(local_model=""))
    health = [t.base_url.removesuffix("/").removesuffix("/v1") + "/health" for t in tiers]
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "run_stack", "--port", str(port)],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )

    def pids(name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"{name} started \(pid (\d+)\)", log.read_text())]

    figures: dict[str, object] = {"local_tiers": [t.name for t in tiers]}
    try:
        figures["start_s"] = until(lambda: ok(url))
        recovery = {}
        for name, ready in (
            ("daphne", lambda: ok(url)),
            ("db_worker", lambda: True),
            ("web_worker", lambda: True),
            ("serve_models", lambda: all(ok(h) for h in health)),
        ):
            if not pids(name):
                continue
            count = len(pids(name))
            os.kill(pids(name)[-1], signal.SIGKILL)
            killed = time.monotonic()
            until(lambda n=name, c=count: len(pids(n)) > c)
            until(lambda r=ready: (time.sleep(0.05) or True) and r())
            recovery[name] = round(time.monotonic() - killed, 2)
        figures["recovery_after_sigkill_s"] = recovery
        children = [
            pids(n)[-1] for n in ("serve_models", "db_worker", "web_worker", "daphne") if pids(n)
        ]
        started = time.monotonic()
        stack.send_signal(signal.SIGTERM)
        stack.wait(30)
        until(lambda: not any(process_alive(p) for p in children), timeout=30)
        figures["sigterm_stop_s"] = round(time.monotonic() - started, 2)
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
    if tiers:
        largest = max(tiers, key=lambda t: t.order)
        model_port = free_port()
        serve = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve_models",
                "--serve",
                f"{largest.local_model}={model_port}:{largest.context_window}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for line in serve.stdout:
            if b"serving" in line:
                break
        started = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        figures["serve_models_sigterm_mid_load_s"] = {
            largest.local_model: round(time.monotonic() - started, 2)
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
