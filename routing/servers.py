"""Local llama.cpp servers (xllamacpp) on loopback, one per bundled model."""

from __future__ import annotations

import errno
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalServerSpec:
    model_path: Path
    port: int
    host: str = "127.0.0.1"
    context_window: int = 4096
    threads: int = 2
    parallel: int = 1
    alias: str = ""


def start_local_server(spec: LocalServerSpec) -> Any:
    """Start llama.cpp's OpenAI-compatible server in this process; returns the xllamacpp.Server."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(spec.model_path)
    if spec.alias:
        params.model_alias = spec.alias
    params.hostnames = [spec.host]
    params.port = spec.port
    # Each slot gets context_window tokens.
    params.n_ctx = spec.context_window * spec.parallel
    params.n_parallel = spec.parallel
    params.cpuparams.n_threads = spec.threads
    params.cpuparams_batch.n_threads = spec.threads
    params.cache_prompt = True
    params.n_cache_reuse = 256
    params.endpoint_metrics = True
    return xllamacpp.Server(params)


def wait_until_healthy(base_url: str, timeout: float = 120.0) -> None:
    """Block until GET {root}/health answers 200, or raise TimeoutError."""
    root = base_url.removesuffix("/").removesuffix("/v1")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"model server at {root} not healthy after {timeout:.0f}s ({last})")


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
