"""Local llama.cpp servers (xllamacpp) on loopback, one per bundled model."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing.per_tier import count_for

# llama.cpp's n_cache_reuse: a run of at least this many tokens of a slot's cached prompt is
# reused at a shifted position; both runtimes get the same value.
CACHE_REUSE_TOKENS = 256
# Tokens the draft model proposes per step when LOCAL_MODEL_DRAFT gives no count:
# bench/speculative.py measured the counts on a 2-core machine.
DEFAULT_DRAFT_MAX = 4


@dataclass(frozen=True)
class LocalServerSpec:
    model_path: Path
    port: int
    host: str = "127.0.0.1"
    context_window: int = 4096
    threads: int = 2
    parallel: int = 1
    # A prompt goes to the slot whose cached prompt it shares at least this share of with
    # (else the least recently used slot); llama.cpp's 0.1 is met by the shared instructions
    # alone, so every prompt overwrote the last slot and several slots kept no topic.
    slot_similarity: float = 0.5
    alias: str = ""
    # Speculative decoding: a smaller model of the same tokenizer drafts up to draft_max tokens
    # that this model checks in one batch (greedy answers stay the same, token for token).
    draft_model_path: Path | None = None
    draft_max: int = DEFAULT_DRAFT_MAX
    # A llama-server binary (routing.native_build) to run as a child process; None runs the
    # xllamacpp wheel's llama.cpp in this process.
    server_binary: Path | None = None


class DraftSettingError(ValueError):
    """LOCAL_MODEL_DRAFT is not a list of name=model[:count] pairs."""


@dataclass(frozen=True)
class Draft:
    """The bundled model that drafts for a server, and how many tokens it drafts per step."""

    model: str
    max_tokens: int = DEFAULT_DRAFT_MAX


def draft_for(name: str, setting: str) -> Draft | None:
    """The draft model for a tier or model name from LOCAL_MODEL_DRAFT, or None.

    The setting is comma-separated name=model pairs with an optional token count
    ("large=qwen2.5-coder-0.5b:4"); a name not listed serves without a draft. Only names are
    accepted: a draft for every server would make the draft model draft for itself.
    """
    drafts: dict[str, Draft] = {}
    for item in str(setting).split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        model, colon, count = value.strip().partition(":")
        try:
            max_tokens = int(count) if colon else DEFAULT_DRAFT_MAX
        except ValueError:
            max_tokens = 0
        if not sep or not key.strip() or not model or max_tokens < 1:
            raise DraftSettingError(
                f"LOCAL_MODEL_DRAFT={setting!r}: {item!r} is not a name=model pair with an "
                "optional draft count of at least 1 (e.g. 'large=qwen2.5-coder-0.5b:4')."
            )
        drafts[key.strip()] = Draft(model=model, max_tokens=max_tokens)
    return drafts.get(name)


def slots_for(name: str, setting: str | int) -> int:
    """Slots (llama.cpp's n_parallel) for a tier or model name from LOCAL_MODEL_PARALLEL: a count
    for every server ("2") or name=count pairs ("medium=4,1"); raises PerTierCountError."""
    return count_for(name, setting, knob="LOCAL_MODEL_PARALLEL")


def start_local_server(spec: LocalServerSpec) -> Any:
    """Start llama.cpp's OpenAI-compatible server: a child process running spec.server_binary
    (a subprocess.Popen), or else the wheel's in this process (an xllamacpp.Server)."""
    if spec.server_binary is not None:
        # Killed with serve_models, however it ends (it stops at once on SIGTERM).
        return subprocess.Popen(
            server_command(spec),
            stdin=subprocess.DEVNULL,
            preexec_fn=parent_death_signal(signal.SIGKILL),
        )
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(spec.model_path)
    if spec.alias:
        params.model_alias = spec.alias
    params.hostnames = [spec.host]
    params.port = spec.port
    # llama.cpp divides n_ctx between the slots (no unified KV cache), so each slot still holds
    # the tier's whole prompt. A request goes to the slot whose cached prompt shares the most
    # with it (slot_prompt_similarity), so with several slots a topic's passages can stay cached
    # while other topics are asked in between.
    params.kv_unified = False
    params.n_ctx = spec.context_window * spec.parallel
    params.n_parallel = spec.parallel
    params.slot_prompt_similarity = spec.slot_similarity
    params.cpuparams.n_threads = spec.threads
    params.cpuparams_batch.n_threads = spec.threads
    params.cache_prompt = True
    params.n_cache_reuse = CACHE_REUSE_TOKENS
    params.endpoint_metrics = True
    if spec.draft_model_path is not None:
        draft = params.speculative.draft
        draft.mparams.path = str(spec.draft_model_path)
        draft.n_max = spec.draft_max
        draft.cpuparams.n_threads = spec.threads
        draft.cpuparams_batch.n_threads = spec.threads
        # A draft path alone loads the draft model but leaves it unused (type NONE).
        params.speculative.types = [
            xllamacpp.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE
        ]
    return xllamacpp.Server(params)


def server_command(spec: LocalServerSpec) -> list[str]:
    """The llama-server command line for spec: the same settings start_local_server gives the
    wheel's server (see there for why each is set)."""
    assert spec.server_binary is not None
    threads = str(spec.threads)
    command = [
        str(spec.server_binary),
        "--model", str(spec.model_path),
        "--host", spec.host,
        "--port", str(spec.port),
        "--ctx-size", str(spec.context_window * spec.parallel),
        "--parallel", str(spec.parallel),
        "--no-kv-unified",
        "--slot-prompt-similarity", str(spec.slot_similarity),
        "--threads", threads,
        "--threads-batch", threads,
        "--cache-reuse", str(CACHE_REUSE_TOKENS),
        "--metrics",
        "--no-webui",
    ]  # fmt: skip
    if spec.alias:
        command += ["--alias", spec.alias]
    if spec.draft_model_path is not None:
        command += [
            "--model-draft", str(spec.draft_model_path),
            "--draft-max", str(spec.draft_max),
            "--threads-draft", threads,
            "--threads-batch-draft", threads,
            "--spec-type", "draft-simple",
        ]  # fmt: skip
    return command


def parent_death_signal(sig: int, *, new_session: bool = False) -> Callable[[], None]:
    """A Popen preexec_fn: the kernel sends the child `sig` when its parent ends (Linux), however
    the parent ends; with new_session, the child also leads a session (and process group) of its
    own. libc and its prctl are looked up here, in the parent: between fork and exec the child
    only makes system calls."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    parent = os.getpid()

    def preexec() -> None:
        if new_session:
            os.setsid()
        if prctl is not None:
            prctl(1, sig)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent ended before the line above
            os.kill(os.getpid(), sig)

    return preexec


def wait_until_healthy(base_url: str, timeout: float = 120.0, server: Any = None) -> None:
    """Block until GET {root}/health answers 200, or raise TimeoutError; RuntimeError as soon as
    `server`, a child process from start_local_server, has exited."""
    root = base_url.removesuffix("/").removesuffix("/v1")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if isinstance(server, subprocess.Popen) and server.poll() is not None:
            raise RuntimeError(f"model server at {root} exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"model server at {root} not healthy after {timeout:.0f}s ({last})")


def process_alive(pid: int) -> bool:
    """Whether any thread of pid still runs; a zombie not yet reaped counts as gone.

    The leader of a threaded process turns zombie while its other threads still exit and hold its
    files and sockets (a model server freeing its prompt cache), so every thread is checked."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as handle:
                if handle.read().split(")")[-1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


def port_holder(port: int) -> str:
    """Who listens on a TCP port, as 'pid N (command line)', from /proc; '' when unknown."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    # State 0A is LISTEN; the local address ends in the port in hex.
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    if not inodes:
        return ""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = " ".join(
                    handle.read().decode(errors="replace").replace("\0", " ").split()
                )
        except OSError:
            continue
        return f"pid {pid} ({command[:120]})"
    return ""


def port_in_use(host: str, port: int) -> str | None:
    """None when host:port can be listened on now, else a sentence naming the port and its holder."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers bind: a port left in TIME_WAIT by a stopped server counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return None
    holder = port_holder(port)
    return f"port {port} on {host} is already in use" + (f" by {holder}" if holder else "")
