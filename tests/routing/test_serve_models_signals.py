"""`serve_models` as a real process, on either llama.cpp runtime: SIGTERM ends it within 10 s while
it loads a model or generates, and frees its port at once; a taken port is named with what to do;
a process counts as gone only when all its threads are."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from routing.native_build import native_server
from routing.servers import port_in_use, wait_until_healthy
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
NATIVE_BUILT = (
    native_server(Path(os.environ.get("LLAMA_SERVER_DIR", ROOT / "var" / "llama-server")))
    is not None
)
RUNTIMES = [
    "wheel",
    pytest.param(
        "native",
        marks=pytest.mark.skipif(not NATIVE_BUILT, reason="llama-server not built for this CPU"),
    ),
]


def _serve(port: int, runtime: str = "wheel") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--serve", f"smollm2-135m={port}:2048"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "LOCAL_MODEL_RUNTIME": runtime},
    )


def _stop_time(process: subprocess.Popen) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("serve_models was still running 15 s after SIGTERM")
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigterm_while_the_model_loads_stops_it_and_frees_the_port(runtime: str) -> None:
    port = free_port()
    process = _serve(port, runtime)
    # The line is printed just before llama.cpp starts loading the weights.
    for line in process.stdout:
        if b"serving smollm2-135m" in line:
            break
    assert _stop_time(process) < 10
    assert port_in_use("127.0.0.1", port) is None


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigterm_mid_generation_stops_it_and_frees_the_port(runtime: str) -> None:
    port = free_port()
    process = _serve(port, runtime)
    threading.Thread(target=process.stdout.read, daemon=True).start()
    wait_until_healthy(f"http://127.0.0.1:{port}/v1", timeout=180)
    first_token = threading.Event()
    ended = threading.Event()

    def generate() -> None:
        body = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Write a very long story about a ship."}],
            "max_tokens": 1500,
            "stream": True,
            "ignore_eos": True,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                for line in response:
                    if line.startswith(b"data: {"):
                        first_token.set()
        except OSError:
            pass
        ended.set()

    threading.Thread(target=generate, daemon=True).start()
    assert first_token.wait(60), "no token streamed"
    assert not ended.is_set()
    assert _stop_time(process) < 10
    assert port_in_use("127.0.0.1", port) is None
    # The customer's stream ends rather than hanging.
    assert ended.wait(10)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_taken_port_is_named_with_what_to_do(runtime: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = _serve(port, runtime)
        output, _ = process.communicate(timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}" in text
    assert "--serve MODEL=PORT" in text
    assert "Failed to init server" not in text


_LEADER_EXITS_FIRST = """
import ctypes, socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(3,)).start()
ctypes.CDLL(None, use_errno=True).syscall(60, 0)  # exit(2): the main thread alone ends
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0]


def test_a_process_whose_leader_exited_first_is_alive_while_a_thread_holds_its_port() -> None:
    from routing.servers import process_alive

    # The leader thread shows as a zombie while another thread runs on with the process's
    # sockets, as a killed model server's threads do while it frees its memory.
    process = subprocess.Popen([sys.executable, "-c", _LEADER_EXITS_FIRST], stdout=subprocess.PIPE)
    port = int(process.stdout.readline())
    deadline = time.monotonic() + 2
    while _state(process.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(process.pid) == "Z"
    assert port_in_use("127.0.0.1", port) is not None
    assert process_alive(process.pid)
    process.wait(timeout=10)
    assert not process_alive(process.pid)
    assert port_in_use("127.0.0.1", port) is None


def _database_sessions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serving_the_tiers_keeps_no_database_connection_or_thread_of_its_own(runtime: str) -> None:
    from routing.models import ModelTier
    from tests.chatbot.test_run_stack import _test_database_url

    port = free_port()
    ModelTier.objects.all().delete()
    ModelTier.objects.create(
        name="small",
        base_url=f"http://127.0.0.1:{port}/v1",
        model="smollm2-135m",
        local_model="smollm2-135m",
        context_window=2048,
        enabled=True,
    )
    before = _database_sessions()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve_models"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DATABASE_URL": _test_database_url(), "LOCAL_MODEL_RUNTIME": runtime},
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/v1", timeout=120)
        # The tiers were read, then the connection (and a pool's threads) given back.
        assert _database_sessions() == before
        if runtime == "native":
            # Only the main thread forked the server: no other thread held a lock the child needs.
            assert os.listdir(f"/proc/{process.pid}/task") == [str(process.pid)]
    finally:
        process.kill()
        process.wait()
