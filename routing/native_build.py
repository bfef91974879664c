"""llama.cpp's server compiled for this machine's CPU, from a pinned source.

The xllamacpp wheel runs llama.cpp compiled for any x86-64 with AVX2. Compiled with
-march=native, the same kernels use what this CPU has beyond that (AVX-512, VNNI): on a 2-core
AMD EPYC the medium model prefilled 347 tokens/s against the wheel's 220 (`bench/prefill.py`),
and prefill is most of the wait for an answer's first words. The source is llama.cpp as the
llama-cpp-python sdist vendors it (MIT, the whole tree), pinned by hash in
requirements-llama-source.txt; `make` downloads it and `manage.py build_llama_server` builds the
`llama-server` target alone (about 4 minutes on 2 cores), once per source and CPU.

The binary is tied to the CPU it was built on: `native_server` offers it only when this CPU has
every feature flag the building one had, so a copied var/ directory falls back to the wheel
instead of stopping on an illegal instruction.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from routing.bundled import file_sha256

BINARY = "llama-server"
BUILT_FOR = "built-for.json"
# The sdist keeps llama.cpp's tree here; only it is extracted.
VENDORED = "vendor/llama.cpp/"

# Static, without the network or optional parts: nothing is fetched at build time, TLS and the
# web UI are not needed by a server on loopback, and the binary needs no shared llama.cpp library.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_CCACHE=OFF",
)


class NativeBuildError(RuntimeError):
    """The server could not be built here (no compiler or cmake, a bad source, a failed step)."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's feature flags (the first `flags` line of /proc/cpuinfo); empty when unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def built_for(root: Path) -> dict | None:
    """What the binary under root was built from and for, or None when there is none."""
    try:
        info = json.loads((root / BUILT_FOR).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and (root / BINARY).is_file() else None


def native_server(root: Path, flags: frozenset[str] | None = None) -> Path | None:
    """The llama-server under root when this CPU has every flag of the one it was built on."""
    info = built_for(root)
    if info is None:
        return None
    flags = cpu_flags() if flags is None else flags
    needed = set(info.get("cpu_flags") or ())
    if not flags or not needed or not needed <= flags:
        return None
    return root / BINARY


def build(archive: Path, root: Path, *, jobs: int = 2, say: Callable[[str], None] = print) -> Path:
    """Build llama-server from the sdist archive into root; returns the binary's path.

    Does nothing when root already holds a build of the same archive for this CPU. The old
    binary stays in place until the new one has run (`--version`), so a failed build leaves
    the last good one (or none) and never half a file.
    """
    flags = cpu_flags()
    sha = file_sha256(archive)
    info = built_for(root)
    if info and info.get("source_sha256") == sha and native_server(root, flags):
        say(f"llama-server is already built for this CPU from {archive.name}")
        return root / BINARY
    cmake = shutil.which("cmake")
    if cmake is None or not (shutil.which("c++") or shutil.which("g++")):
        raise NativeBuildError("cmake and a C++ compiler are needed to build llama-server")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-build-", dir=root) as work:
        source = _extract(archive, Path(work))
        build_dir = Path(work) / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        say(f"building llama-server for this CPU from {archive.name} ({jobs} jobs)")
        _run([cmake, "-S", str(source), "-B", str(build_dir), *generator, *CMAKE_OPTIONS], say)
        _run([cmake, "--build", str(build_dir), "--target", BINARY, "-j", str(jobs)], say)
        built = build_dir / "bin" / BINARY
        if not built.is_file():
            raise NativeBuildError(f"the build finished without {built.relative_to(work)}")
        staged = root / f"{BINARY}.new"
        shutil.copy2(built, staged)
        try:
            version = subprocess.run(
                [str(staged), "--version"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            staged.unlink(missing_ok=True)
            raise NativeBuildError(f"the built llama-server does not run: {exc}") from exc
        if version.returncode != 0:
            staged.unlink(missing_ok=True)
            raise NativeBuildError(
                f"the built llama-server does not run (exit {version.returncode}): "
                f"{(version.stderr or version.stdout).strip()[-300:]}"
            )
        (root / BUILT_FOR).unlink(missing_ok=True)
        os.replace(staged, root / BINARY)
        record = {
            "source": archive.name,
            "source_sha256": sha,
            "cpu_flags": sorted(flags),
            "version": (version.stdout + version.stderr).strip()[-300:],
        }
        (root / BUILT_FOR).write_text(json.dumps(record, indent=1) + "\n")
    say(f"llama-server built: {root / BINARY}")
    return root / BINARY


def _extract(archive: Path, into: Path) -> Path:
    """Extract the sdist's vendored llama.cpp tree; returns its folder."""
    try:
        with tarfile.open(archive) as tar:
            # <name-version>/vendor/llama.cpp/..., not a copy elsewhere (its .git/modules).
            members = [m for m in tar.getmembers() if m.name.partition("/")[2].startswith(VENDORED)]
            if not members:
                raise NativeBuildError(f"{archive.name} holds no {VENDORED} tree")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise NativeBuildError(f"cannot read {archive.name}: {exc}") from exc
    return into / members[0].name.partition("/")[0] / VENDORED


def _run(command: list[str], say: Callable[[str], None]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise NativeBuildError(
            f"{Path(command[0]).name} {command[1]} failed (exit {done.returncode}):\n"
            + "\n".join(tail)
        )
