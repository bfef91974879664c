"""Local llama.cpp servers (xllamacpp) on loopback, one per bundled model."""

from __future__ import annotations

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
